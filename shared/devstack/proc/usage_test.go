package proc_test

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"sluice/shared/devstack/proc"
)

func fixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseStat(t *testing.T) {
	for _, tc := range []struct {
		file      string
		user, sys uint64
		wantErr   bool
	}{
		{file: "stat-sluice", user: 1834, sys: 412},
		// A command name with spaces and parentheses: fields count from
		// the last closing parenthesis.
		{file: "stat-odd-name", user: 25, sys: 3},
		{file: "stat-short", wantErr: true},
	} {
		t.Run(tc.file, func(t *testing.T) {
			user, sys, err := proc.ParseStat(fixture(t, tc.file))
			if tc.wantErr {
				if err == nil {
					t.Fatalf("got %d, %d and no error", user, sys)
				}
				return
			}
			if err != nil || user != tc.user || sys != tc.sys {
				t.Fatalf("got %d, %d, %v; want %d, %d", user, sys, err, tc.user, tc.sys)
			}
		})
	}
	if _, _, err := proc.ParseStat([]byte("no name here")); err == nil {
		t.Error("a line without a command name parsed")
	}
}

func TestParseIO(t *testing.T) {
	for _, tc := range []struct {
		file      string
		r, w      uint64
		wantError bool
	}{
		{file: "io-sluice", r: 632687, w: 632675},
		{file: "io-no-syscalls", wantError: true},
		{file: "io-bad-number", wantError: true},
	} {
		t.Run(tc.file, func(t *testing.T) {
			r, w, err := proc.ParseIO(fixture(t, tc.file))
			if tc.wantError {
				if err == nil {
					t.Fatalf("got %d, %d and no error", r, w)
				}
				return
			}
			if err != nil || r != tc.r || w != tc.w {
				t.Fatalf("got %d, %d, %v; want %d, %d", r, w, err, tc.r, tc.w)
			}
		})
	}
}

func TestAuxvValue(t *testing.T) {
	vec := func(size int, pairs ...uint64) []byte {
		b := make([]byte, 0, len(pairs)*size)
		for _, v := range pairs {
			if size == 4 {
				b = binary.NativeEndian.AppendUint32(b, uint32(v))
			} else {
				b = binary.NativeEndian.AppendUint64(b, v)
			}
		}
		return b
	}
	for _, size := range []int{4, 8} {
		b := vec(size, 6, 4096, 17, 250, 0, 0, 17, 999)
		if v, ok := proc.AuxvValue(b, size, 17); !ok || v != 250 {
			t.Errorf("word size %d: AT_CLKTCK %d, %v; want 250", size, v, ok)
		}
		if v, ok := proc.AuxvValue(b, size, 33); ok {
			t.Errorf("word size %d: found type 33 = %d, which is not there", size, v)
		}
		// What follows the terminating entry is not read.
		if v, ok := proc.AuxvValue(vec(size, 0, 0, 17, 999), size, 17); ok {
			t.Errorf("word size %d: read %d past the end", size, v)
		}
	}
	if _, ok := proc.AuxvValue(vec(8, 17, 100), 3, 17); ok {
		t.Error("a word size of 3 read something")
	}
}

func TestUsage(t *testing.T) {
	u := proc.Usage{UserTicks: 350, SysTicks: 150, ReadCalls: 7, WriteCalls: 5}
	d := u.Sub(proc.Usage{UserTicks: 50, SysTicks: 50, ReadCalls: 2, WriteCalls: 1})
	hz := time.Duration(proc.ClockTicks())
	if d.CPU() != 400*time.Second/hz || d.User() != 300*time.Second/hz || d.Sys() != 100*time.Second/hz || d.Syscalls() != 9 {
		t.Errorf("difference %+v: cpu %v, user %v, sys %v, syscalls %d", d, d.CPU(), d.User(), d.Sys(), d.Syscalls())
	}
}

// TestReadSelf reads this process's own usage: it exists and grows with
// work done.
func TestReadSelf(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("/proc is Linux's")
	}
	if hz := proc.ClockTicks(); hz != 100 {
		t.Logf("clock ticks: %d/s (100 on every common Linux)", hz)
	}
	before, err := proc.Read(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join("testdata", "io-sluice"))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	for range 10 {
		if _, err := f.ReadAt(buf, 0); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	for range 10 { // an idle process: its threads block, and are woken
		time.Sleep(2 * time.Millisecond)
	}
	after, err := proc.Read(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if got := after.Sub(before).ReadCalls; got < 10 {
		t.Errorf("10 preads counted as %d read calls", got)
	}
	if got := after.Sub(before).Sleeps; got < 10 {
		t.Errorf("10 sleeps of an idle process counted as %d thread sleeps", got)
	}
	if _, err := proc.Read(-1); err == nil {
		t.Error("read the usage of pid -1")
	}
}

func TestParseMachine(t *testing.T) {
	m, err := proc.ParseMachine(fixture(t, "stat-machine"))
	if err != nil {
		t.Fatal(err)
	}
	busy := uint64(232876 + 1203 + 61234 + 2345 + 17)
	if m.Busy != busy || m.Total != busy+5123456+4321 {
		t.Errorf("got %+v, want busy %d, total %d", m, busy, busy+5123456+4321)
	}
	for _, bad := range []string{"", "cpu0 1 2 3 4 5 6 7 8\n", "cpu 1 2 3\n", "cpu 1 2 3 x 5 6 7 8\n"} {
		if m, err := proc.ParseMachine([]byte(bad)); err == nil {
			t.Errorf("%q parsed as %+v", bad, m)
		}
	}
	if _, err := proc.ReadMachine(); runtime.GOOS == "linux" && err != nil {
		t.Error(err)
	}
}

func TestParseVoluntarySwitches(t *testing.T) {
	status := "Name:\tsluice\nState:\tS (sleeping)\nvoluntary_ctxt_switches:\t1234\nnonvoluntary_ctxt_switches:\t56\n"
	if n, err := proc.ParseVoluntarySwitches([]byte(status)); err != nil || n != 1234 {
		t.Errorf("ParseVoluntarySwitches = %d, %v, want 1234", n, err)
	}
	if _, err := proc.ParseVoluntarySwitches([]byte("Name:\tsluice\n")); err == nil {
		t.Error("a status without the line parsed")
	}
}
