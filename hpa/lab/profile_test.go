package lab

import (
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func TestParseProfile(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Profile
	}{
		{"Plain", "0,10\n30,50\n60,10\n",
			Profile{Name: "p", Steps: []Step{{0, 10}, {30, 50}, {60, 10}}}},
		{"HeaderCommentsBlanksDirective",
			"# a flash sale\n\n# bot_share: 0.2\nsecond,questions_per_second\n0,10\n\n  30 , 50.5  # the peak\n60,0\r\n",
			Profile{Name: "p", BotShare: 0.2, Steps: []Step{{0, 10}, {30, 50.5}, {60, 0}}}},
		{"HeaderWithSpacesAnyCase", "Second, Questions_Per_Second\n0,1\n1.5,2\n",
			Profile{Name: "p", Steps: []Step{{0, 1}, {1.5, 2}}}},
		{"DirectiveAfterSteps", "0,1\n10,1\n#bot_share:1\n",
			Profile{Name: "p", BotShare: 1, Steps: []Step{{0, 1}, {10, 1}}}},
		{"FirstStepLater", "5,1\n10,1\n",
			Profile{Name: "p", Steps: []Step{{5, 1}, {10, 1}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseProfile(strings.NewReader(tt.in), "p")
			if err != nil {
				t.Fatalf("ParseProfile: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseProfileErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string // all in the error
	}{
		{"NonNumericRate", "0,10\n10,lots\n20,1\n", []string{"line 2:", `questions_per_second "lots" is not a number`}},
		{"NonNumericSecond", "# c\n0,10\nten,1\n", []string{"line 3:", `second "ten" is not a number`}},
		{"OtherHeader", "t,rate\n0,1\n", []string{"line 1:", `second "t" is not a number`, "header is second,questions_per_second"}},
		{"HeaderAfterSteps", "0,1\nsecond,questions_per_second\n", []string{"line 2:", "not a number"}},
		{"NaN", "0,NaN\n1,1\n", []string{"line 1:", "not a number"}},
		{"Inf", "0,1\n+Inf,1\n", []string{"line 2:", "not a number"}},
		{"NegativeRate", "0,1\n\n5,-3\n9,1\n", []string{"line 3:", "questions_per_second -3 is negative"}},
		{"NegativeSecond", "-1,1\n5,1\n", []string{"line 1:", "second -1 is negative"}},
		{"SecondsRepeat", "0,1\n5,2\n5,3\n", []string{"line 3:", "seconds must increase"}},
		{"SecondsGoBack", "0,1\n5,2\n4,3\n", []string{"line 3:", "second 4 does not come after the previous step's 5"}},
		{"ThreeFields", "0,1,2\n", []string{"line 1:", "3 fields, want 2"}},
		{"OneField", "0,1\n7\n", []string{"line 2:", "1 fields, want 2"}},
		{"Empty", "", []string{"empty profile"}},
		{"OnlyComments", "# nothing\n\nsecond,questions_per_second\n", []string{"line 3:", "empty profile"}},
		{"OneStep", "0,10\n", []string{"line 1:", "empty profile", "lasts no time"}},
		{"BotShareTooBig", "# bot_share: 1.5\n0,1\n1,1\n", []string{"line 1:", `bot_share "1.5" is not a share between 0 and 1`}},
		{"BotShareNotNumber", "0,1\n# bot_share: half\n1,1\n", []string{"line 2:", "bot_share"}},
		{"BotShareTwice", "# bot_share: 0.1\n# bot_share: 0.2\n0,1\n1,1\n", []string{"line 2:", "first on line 1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := ParseProfile(strings.NewReader(tt.in), "p")
			if err == nil {
				t.Fatalf("no error, profile %+v", p)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

func TestLoadProfile(t *testing.T) {
	t.Run("FlashSale", func(t *testing.T) {
		p, err := LoadProfile("flash-sale")
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(p, FlashSale(3, 30)) {
			t.Errorf("LoadProfile(flash-sale) = %+v, want FlashSale(3, 30)", p)
		}
	})
	t.Run("File", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "ramp.csv")
		if err := os.WriteFile(path, []byte("# bot_share: 0.5\n0,1\n10,2\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		p, err := LoadProfile(path)
		if err != nil {
			t.Fatal(err)
		}
		want := Profile{Name: "ramp", BotShare: 0.5, Steps: []Step{{0, 1}, {10, 2}}}
		if !reflect.DeepEqual(p, want) {
			t.Errorf("got %+v, want %+v", p, want)
		}
	})
	t.Run("BadFileNamesPathAndLine", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "bad.csv")
		if err := os.WriteFile(path, []byte("0,1\n1,x\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := LoadProfile(path)
		if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "line 2:") {
			t.Errorf("error %v, want one naming %s and line 2", err, path)
		}
	})
	t.Run("Missing", func(t *testing.T) {
		if _, err := LoadProfile(filepath.Join(t.TempDir(), "none.csv")); err == nil {
			t.Error("no error for a missing file")
		}
	})
}

func TestFlashSale(t *testing.T) {
	p := FlashSale(20, 5)
	if got := p.Duration(); got != 150 {
		t.Errorf("Duration = %g, want 150", got)
	}
	tests := []struct {
		t, want float64
	}{
		{0, 20}, {10, 20}, {19.9, 20}, {20.5, 20}, // base
		{25, 60}, {29.5, 92}, // ramp: 8 per second
		{30, 100}, {50, 100}, {69.9, 100}, // peak
		{80, 60}, {89.9, 24}, // decay: 4 per second
		{90, 20}, {120, 20}, {149.9, 20}, {150, 20}, // base again
		{-1, 0}, // before the profile
	}
	for _, tt := range tests {
		if got := p.RateAt(tt.t); got != tt.want {
			t.Errorf("RateAt(%g) = %g, want %g", tt.t, got, tt.want)
		}
	}
	prev := 0.0
	for sec := 0.0; sec <= 30; sec++ {
		if r := p.RateAt(sec); r < prev {
			t.Errorf("RateAt(%g) = %g falls during the ramp (was %g)", sec, r, prev)
		} else {
			prev = r
		}
	}
	for i := 1; i < len(p.Steps); i++ {
		if p.Steps[i].Second <= p.Steps[i-1].Second {
			t.Fatalf("steps not sorted at %d: %+v", i, p.Steps)
		}
	}
	// The built-in profile is a valid profile file.
	var b strings.Builder
	for _, s := range p.Steps {
		b.WriteString(strconv.FormatFloat(s.Second, 'g', -1, 64) + "," + strconv.FormatFloat(s.Rate, 'g', -1, 64) + "\n")
	}
	parsed, err := ParseProfile(strings.NewReader(b.String()), p.Name)
	if err != nil || !reflect.DeepEqual(parsed, p) {
		t.Errorf("FlashSale written and parsed: %+v, %v", parsed, err)
	}
}

func TestRateAtDuration(t *testing.T) {
	p := Profile{Steps: []Step{{2, 5}, {4, 0}, {6, 7}}}
	tests := []struct{ t, want float64 }{
		{0, 0}, {1.99, 0}, {2, 5}, {3.99, 5}, {4, 0}, {5, 0}, {6, 7}, {100, 7},
	}
	for _, tt := range tests {
		if got := p.RateAt(tt.t); got != tt.want {
			t.Errorf("RateAt(%g) = %g, want %g", tt.t, got, tt.want)
		}
	}
	if got := p.Duration(); got != 6 {
		t.Errorf("Duration = %g, want 6", got)
	}
	if got := (Profile{}).Duration(); got != 0 {
		t.Errorf("empty Duration = %g, want 0", got)
	}
	if got := (Profile{}).RateAt(3); got != 0 {
		t.Errorf("empty RateAt = %g, want 0", got)
	}
}

func TestScale(t *testing.T) {
	p := Profile{Name: "x", BotShare: 0.3, Steps: []Step{{0, 10}, {5, 2.5}, {9, 0}}}
	q := p.Scale(40)
	want := Profile{Name: "x", BotShare: 0.3, Steps: []Step{{0, 400}, {5, 100}, {9, 0}}}
	if !reflect.DeepEqual(q, want) {
		t.Errorf("Scale(40) = %+v, want %+v", q, want)
	}
	if p.Steps[0].Rate != 10 {
		t.Errorf("Scale changed the original: %+v", p.Steps)
	}
	if got, want := FlashSale(20, 5).Scale(100).RateAt(50), 10000.0; got != want {
		t.Errorf("flash sale at cluster scale: peak %g, want %g", got, want)
	}
	if got := q.Duration(); got != p.Duration() {
		t.Errorf("Scale changed the duration: %g", got)
	}
}

// TestFlashSaleHour: the hour-long sale is base for 5 minutes, 30x from
// 5:10 to 20:10, back to base by 30:10, and lasts the hour.
func TestFlashSaleHour(t *testing.T) {
	p, err := LoadProfile("flash-sale-hour")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ at, want float64 }{{0, 3}, {299, 3}, {310, 90}, {1200, 90}, {1810, 3}, {3599, 3}} {
		if got := p.RateAt(c.at); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("RateAt(%g) = %g, want %g", c.at, got, c.want)
		}
	}
	if p.Duration() != 3600 || p.Name != "flash-sale-hour" {
		t.Errorf("%s lasts %gs, want flash-sale-hour of 3600s", p.Name, p.Duration())
	}
}
