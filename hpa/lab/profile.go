package lab

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Profile is the offered traffic: questions per second by second, open
// loop (the questions are sent on schedule whether or not the earlier ones
// were answered, as real users do).
type Profile struct {
	Name string
	// Steps are sorted by Second; each rate holds until the next step
	// (a step function), and the profile ends at the last step's Second.
	Steps []Step
	// BotShare is the share (0..1) of questions produced straight to Kafka
	// instead of through HTTP; zero when the profile does not say.
	BotShare float64
}

// Step is one step of a [Profile]: from Second on, Rate questions per
// second.
type Step struct {
	Second float64
	Rate   float64
}

// The built-in profile and the defaults LoadProfile gives it: a sale that
// multiplies a lab-sized base of 3 questions/s by 30, as the seed design's
// 00:00 does (90 questions/s at the peak: 13 consumers of the lab's
// default budget at the chart's 0.7 target).
const (
	flashSaleName     = "flash-sale"
	flashSaleHourName = "flash-sale-hour"
	flashSaleBase     = 3
	flashSalePeak     = 30
)

const (
	profileHeader   = "second,questions_per_second"
	botShareKeyword = "bot_share:"
)

// FlashSale returns the built-in profile: base questions/s for 20 s, a
// ramp to base×peakFactor within 10 s (in 1 s steps), 40 s at the peak, a
// decay back to base over 20 s (in 1 s steps), then base until 150 s.
// It is what a flash sale does to a chat service: the queue forms while
// the autoscaler still reads the old load, and the decay shows how fast
// it gives the pods back.
func FlashSale(base, peakFactor float64) Profile {
	peak := base * peakFactor
	steps := []Step{{Second: 0, Rate: base}}
	// Ramp: the rate reaches the peak at 30 s.
	for i := 1; i <= 10; i++ {
		steps = append(steps, Step{Second: float64(20 + i), Rate: base + (peak-base)*float64(i)/10})
	}
	// Decay from 70 s: back at base at 90 s.
	for i := 1; i <= 20; i++ {
		steps = append(steps, Step{Second: float64(70 + i), Rate: peak - (peak-base)*float64(i)/20})
	}
	steps = append(steps, Step{Second: 150, Rate: base})
	return Profile{Name: flashSaleName, Steps: steps}
}

// FlashSaleHour returns the built-in profile "flash-sale-hour", the
// flash sale at the pace of a real one, for the simulation at cluster
// scale with the autoscaler's real periods (time factor 1): base
// questions/s for 5 minutes, a ramp to base×peakFactor within 10 s, 15
// minutes at the peak, a decay back to base over 10 minutes, then base
// until the hour is over, long enough for the 10 %-a-minute scale-down to
// give back hundreds of pods.
func FlashSaleHour(base, peakFactor float64) Profile {
	peak := base * peakFactor
	steps := []Step{{Second: 0, Rate: base}}
	for i := 1; i <= 10; i++ {
		steps = append(steps, Step{Second: float64(300 + i), Rate: base + (peak-base)*float64(i)/10})
	}
	for i := 1; i <= 60; i++ {
		steps = append(steps, Step{Second: float64(1210 + 10*i), Rate: peak - (peak-base)*float64(i)/60})
	}
	steps = append(steps, Step{Second: 3600, Rate: base})
	return Profile{Name: flashSaleHourName, Steps: steps}
}

// LoadProfile returns the built-in profile for the name "flash-sale"
// (FlashSale(3, 30): 3 questions/s rising to 90) or "flash-sale-hour"
// (FlashSaleHour(3, 30)), and otherwise parses
// the profile file at path, named after the file without its extension.
// It returns an error when the file cannot be read or is not a valid
// profile (see [ParseProfile]).
func LoadProfile(path string) (Profile, error) {
	switch path {
	case flashSaleName:
		return FlashSale(flashSaleBase, flashSalePeak), nil
	case flashSaleHourName:
		return FlashSaleHour(flashSaleBase, flashSalePeak), nil
	}
	f, err := os.Open(path)
	if err != nil {
		return Profile{}, fmt.Errorf("load profile: %w", err)
	}
	defer f.Close()
	name := strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	p, err := ParseProfile(f, name)
	if err != nil {
		return Profile{}, fmt.Errorf("load profile %s: %w", path, err)
	}
	return p, nil
}

// ParseProfile reads a profile file (CSV lines `second,questions_per_second`,
// see the package doc) and names it name. It returns an error naming the
// line and the fault when a field is not a finite number, a second or a rate
// is negative, the seconds do not increase, the bot_share directive is not a
// share between 0 and 1, or the profile is empty (no step, or a single step,
// which lasts no time at all since the last step marks the end).
func ParseProfile(r io.Reader, name string) (Profile, error) {
	p := Profile{Name: name}
	sc := bufio.NewScanner(r)
	lineNo, botShareLine := 0, 0
	for sc.Scan() {
		lineNo++
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		if comment, ok := strings.CutPrefix(line, "#"); ok {
			value, ok := strings.CutPrefix(strings.TrimSpace(comment), botShareKeyword)
			if !ok {
				continue
			}
			if botShareLine != 0 {
				return Profile{}, fmt.Errorf("line %d: bot_share set again (first on line %d)", lineNo, botShareLine)
			}
			share, err := parseNumber(strings.TrimSpace(value))
			if err != nil || share < 0 || share > 1 {
				return Profile{}, fmt.Errorf("line %d: bot_share %q is not a share between 0 and 1", lineNo, strings.TrimSpace(value))
			}
			p.BotShare, botShareLine = share, lineNo
			continue
		}
		// A comment may follow the step on its line.
		line, _, _ = strings.Cut(line, "#")
		fields := strings.Split(line, ",")
		for i := range fields {
			fields[i] = strings.TrimSpace(fields[i])
		}
		if len(p.Steps) == 0 && strings.EqualFold(strings.Join(fields, ","), profileHeader) {
			continue
		}
		if len(fields) != 2 {
			return Profile{}, fmt.Errorf("line %d: %d fields, want 2 (%s)", lineNo, len(fields), profileHeader)
		}
		step, err := parseStep(fields[0], fields[1])
		if err != nil {
			if _, e := parseNumber(fields[0]); e != nil && len(p.Steps) == 0 {
				// Most likely a header with other names.
				return Profile{}, fmt.Errorf("line %d: %w (the optional header is %s)", lineNo, err, profileHeader)
			}
			return Profile{}, fmt.Errorf("line %d: %w", lineNo, err)
		}
		if n := len(p.Steps); n > 0 && step.Second <= p.Steps[n-1].Second {
			return Profile{}, fmt.Errorf("line %d: second %g does not come after the previous step's %g: seconds must increase",
				lineNo, step.Second, p.Steps[n-1].Second)
		}
		p.Steps = append(p.Steps, step)
	}
	if err := sc.Err(); err != nil {
		return Profile{}, fmt.Errorf("line %d: %w", lineNo+1, err)
	}
	switch {
	case lineNo == 0:
		return Profile{}, errors.New("empty profile: no lines")
	case len(p.Steps) == 0:
		return Profile{}, fmt.Errorf("line %d: empty profile: no step before the end of the file", lineNo)
	case len(p.Steps) == 1:
		return Profile{}, fmt.Errorf("line %d: empty profile: its only step lasts no time (the last step's second marks the end)", lineNo)
	}
	return p, nil
}

func parseStep(second, rate string) (Step, error) {
	s, err := parseNumber(second)
	if err != nil {
		return Step{}, fmt.Errorf("second %q is not a number", second)
	}
	if s < 0 {
		return Step{}, fmt.Errorf("second %g is negative", s)
	}
	q, err := parseNumber(rate)
	if err != nil {
		return Step{}, fmt.Errorf("questions_per_second %q is not a number", rate)
	}
	if q < 0 {
		return Step{}, fmt.Errorf("questions_per_second %g is negative", q)
	}
	return Step{Second: s, Rate: q}, nil
}

var errNotFinite = errors.New("not a finite number")

// parseNumber parses a finite float: ParseFloat accepts "NaN" and "Inf",
// which no profile means.
func parseNumber(s string) (float64, error) {
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, err
	}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, errNotFinite
	}
	return v, nil
}

// RateAt returns the offered rate (questions/s) at t seconds: the rate of
// the last step at or before t. Before the first step it is zero; from the
// end on it is the last step's rate, so a runner that overshoots the end by
// a tick does not see the traffic drop.
func (p Profile) RateAt(t float64) float64 {
	rate := 0.0
	for _, s := range p.Steps {
		if s.Second > t {
			break
		}
		rate = s.Rate
	}
	return rate
}

// Duration returns how long the profile lasts in seconds: the last step's
// Second, zero for a profile without steps.
func (p Profile) Duration() float64 {
	if len(p.Steps) == 0 {
		return 0
	}
	return p.Steps[len(p.Steps)-1].Second
}

// Scale returns a copy of the profile with every rate multiplied by f
// (the lab profile run at cluster scale); the name, the seconds and the
// bot share are unchanged. f is meant to be positive: the caller checks
// its flag, a negative f would give negative rates.
func (p Profile) Scale(f float64) Profile {
	q := p
	q.Steps = make([]Step, len(p.Steps))
	for i, s := range p.Steps {
		q.Steps[i] = Step{Second: s.Second, Rate: s.Rate * f}
	}
	return q
}
