// Package settings binds Sluice's settings to command-line flags and their
// SLUICE_* environment twins (--kafka-brokers is SLUICE_KAFKA_BROKERS), and
// reports every invalid setting of a start at once, each named by both
// spellings.
//
// Each package registers the flags of its own Config (RegisterFlags) and
// validates it with a Problems, so that an error names the flag whatever
// code reports it; only package main reads the environment (Parse).
package settings

import (
	"errors"
	"flag"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// EnvName is the environment twin of a flag: kafka-brokers → SLUICE_KAFKA_BROKERS.
func EnvName(flagName string) string {
	return "SLUICE_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// FlagName is the flag of an environment twin: SLUICE_KAFKA_BROKERS →
// kafka-brokers. It returns "" for a name without the SLUICE_ prefix.
func FlagName(envName string) string {
	rest, ok := strings.CutPrefix(envName, "SLUICE_")
	if !ok {
		return ""
	}
	return strings.ToLower(strings.ReplaceAll(rest, "_", "-"))
}

// Error is a problem with one setting.
type Error struct {
	// Flag is the setting's flag name without dashes, e.g. "in-flight".
	Flag string
	Err  error
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s (--%s): %v", EnvName(e.Flag), e.Flag, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error about the setting flag.
func Errorf(flag, format string, args ...any) error {
	return &Error{Flag: flag, Err: fmt.Errorf(format, args...)}
}

// Problems collects the problems of a validation, so that a start reports
// every invalid setting at once. The zero value is ready to use.
type Problems struct{ errs []error }

// Check records a problem with the setting flag unless ok.
func (p *Problems) Check(ok bool, flag, format string, args ...any) {
	if !ok {
		p.errs = append(p.errs, Errorf(flag, format, args...))
	}
}

// Add records err (nil is ignored); an error that is not an *Error, or a
// join of them, is recorded as it is.
func (p *Problems) Add(err error) {
	if err != nil {
		p.errs = append(p.errs, err)
	}
}

// Err returns the problems joined, or nil when there is none.
func (p *Problems) Err() error { return errors.Join(p.errs...) }

// List is a comma-separated list flag; blanks around items are dropped.
type List struct{ P *[]string }

func (l List) String() string {
	if l.P == nil {
		return ""
	}
	return strings.Join(*l.P, ",")
}

// Set replaces the list with the items of s.
func (l List) Set(s string) error {
	*l.P = nil
	for part := range strings.SplitSeq(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			*l.P = append(*l.P, part)
		}
	}
	return nil
}

// Parse applies the environment twins of fs's flags, read through lookup,
// then args, so that a flag on the command line wins over the environment.
// A variable set to the empty string counts as unset, as deployment files
// write an optional setting (SLUICE_SESSION_TIMEOUT=).
// It reports every value that does not parse, each named by its setting,
// and an unknown flag or a stray argument; a duration without a unit says
// that it needs one. It returns flag.ErrHelp for -h and --help.
func Parse(fs *flag.FlagSet, args []string, lookup func(string) (string, bool)) error {
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if v, ok := lookup(EnvName(f.Name)); ok && v != "" {
			if err := set(fs, f, v); err != nil {
				errs = append(errs, err)
			}
		}
	})
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			if rest := args[i+1:]; len(rest) > 0 {
				errs = append(errs, fmt.Errorf("unexpected arguments %q", rest))
			}
			break
		}
		name, ok := strings.CutPrefix(a, "-")
		if !ok || name == "" {
			errs = append(errs, fmt.Errorf("unexpected argument %q (settings are flags: --name value)", a))
			continue
		}
		name = strings.TrimPrefix(name, "-")
		name, value, hasValue := strings.Cut(name, "=")
		if name == "h" || name == "help" {
			fs.Usage()
			return flag.ErrHelp
		}
		f := fs.Lookup(name)
		if f == nil {
			errs = append(errs, unknownFlag(fs, name))
			if !hasValue && i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
				i++ // its value, most likely
			}
			continue
		}
		if !hasValue {
			if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
				value = "true"
			} else if i+1 < len(args) {
				i++
				value = args[i]
			} else {
				errs = append(errs, &Error{Flag: name, Err: errors.New("needs a value")})
				continue
			}
		}
		if err := set(fs, f, value); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// set sets f to v and names the setting in an error; the flag package's own
// error for a duration ("parse error") does not say what is wrong.
func set(fs *flag.FlagSet, f *flag.Flag, v string) error {
	err := fs.Set(f.Name, v)
	if err == nil {
		return nil
	}
	if g, ok := f.Value.(flag.Getter); ok {
		if _, isDur := g.Get().(time.Duration); isDur {
			if _, nerr := strconv.ParseFloat(strings.TrimSpace(v), 64); nerr == nil {
				return &Error{Flag: f.Name, Err: fmt.Errorf("invalid value %q: a duration needs a unit, e.g. %ss or %sms", v, strings.TrimSpace(v), strings.TrimSpace(v))}
			}
			return &Error{Flag: f.Name, Err: fmt.Errorf("invalid value %q: not a duration (e.g. 300ms, 5s, 2m, 1h30m)", v)}
		}
	}
	return &Error{Flag: f.Name, Err: fmt.Errorf("invalid value %q: %w", v, unwrapFlagError(err))}
}

// unwrapFlagError keeps the cause of a flag.Value's Set error: the flag
// package wraps it as `invalid value "v" for flag -name: cause`.
func unwrapFlagError(err error) error {
	if u := errors.Unwrap(err); u != nil {
		return u
	}
	msg := err.Error()
	if _, cause, ok := strings.Cut(msg, ": "); ok && strings.HasPrefix(msg, "invalid ") {
		return errors.New(cause)
	}
	return err
}

func unknownFlag(fs *flag.FlagSet, name string) error {
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	if s := Suggest(name, names); s != "" {
		return fmt.Errorf("unknown flag --%s (did you mean --%s?)", name, s)
	}
	return fmt.Errorf("unknown flag --%s (see sluice %s -h)", name, fs.Name())
}

// Ignored is a SLUICE_* environment variable that is not a setting of the
// command, with the setting it most likely means ("" when none is close).
type Ignored struct {
	Name    string
	Suggest string
}

func (i Ignored) String() string {
	if i.Suggest == "" {
		return i.Name
	}
	return i.Name + " (did you mean " + i.Suggest + "?)"
}

// IgnoredEnv returns the SLUICE_* variables of environ that are not
// settings of fs's command, sorted by name: a typo, or a setting of another
// subcommand, which this one ignores.
func IgnoredEnv(fs *flag.FlagSet, environ []string) []Ignored {
	known := map[string]bool{}
	var names []string
	fs.VisitAll(func(f *flag.Flag) {
		known[EnvName(f.Name)] = true
		names = append(names, EnvName(f.Name))
	})
	var out []Ignored
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "SLUICE_") && !known[name] {
			out = append(out, Ignored{Name: name, Suggest: Suggest(name, names)})
		}
	}
	slices.SortFunc(out, func(a, b Ignored) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Suggest returns the candidate closest to name by edit distance, or ""
// when none is within a third of name's length (at least 3 edits).
func Suggest(name string, candidates []string) string {
	best, bestD := "", max(3, len(name)/3)+1
	for _, c := range candidates {
		d := distance(strings.ToLower(name), strings.ToLower(c))
		if d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

// distance is the Levenshtein distance of a and b.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
