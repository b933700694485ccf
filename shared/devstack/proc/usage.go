package proc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"
)

// Usage is what a process used since it started, as Linux's /proc counts
// it for the whole process (every thread, the exited ones too).
type Usage struct {
	// UserTicks and SysTicks are the CPU time spent in user and in kernel
	// mode (utime and stime of /proc/PID/stat), in clock ticks: see
	// ClockTicks.
	UserTicks, SysTicks uint64
	// ReadCalls and WriteCalls count the read and write system calls
	// (syscr and syscw of /proc/PID/io): read, readv, pread and write,
	// writev, pwrite, sendfile, on files and sockets alike. Go's network
	// I/O goes through these, so they count a server's socket reads and
	// writes; epoll_wait, futex, sendmsg and the like are not counted.
	ReadCalls, WriteCalls uint64
	// Sleeps counts the times a thread of the process blocked and gave up
	// its CPU (voluntary_ctxt_switches of /proc/PID/task/TID/status,
	// summed over the threads alive at the reading): in a Go process, a
	// thread parking in futex or epoll_wait with nothing to run, each
	// later woken again. Threads that exited took their counts with them
	// (Go's rarely exit).
	Sleeps uint64
}

// Read reads the usage of process pid from /proc/PID/stat and /proc/PID/io.
// It fails when the process is gone, /proc/PID/io is not readable (another
// user's process), or a file does not parse.
func Read(pid int) (Usage, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return Usage{}, fmt.Errorf("read cpu time: %w", err)
	}
	var u Usage
	if u.UserTicks, u.SysTicks, err = ParseStat(stat); err != nil {
		return Usage{}, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	io, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return Usage{}, fmt.Errorf("read system calls: %w", err)
	}
	if u.ReadCalls, u.WriteCalls, err = ParseIO(io); err != nil {
		return Usage{}, fmt.Errorf("/proc/%d/io: %w", pid, err)
	}
	if u.Sleeps, err = readSleeps(pid); err != nil {
		return Usage{}, err
	}
	return u, nil
}

// readSleeps sums voluntary_ctxt_switches over the threads of process pid.
func readSleeps(pid int) (uint64, error) {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("read threads: %w", err)
	}
	var sum uint64
	for _, t := range tasks {
		b, err := os.ReadFile(dir + "/" + t.Name() + "/status")
		if err != nil {
			continue // the thread exited meanwhile
		}
		n, err := ParseVoluntarySwitches(b)
		if err != nil {
			return 0, fmt.Errorf("%s/%s/status: %w", dir, t.Name(), err)
		}
		sum += n
	}
	return sum, nil
}

// ParseVoluntarySwitches returns voluntary_ctxt_switches of the contents
// of a /proc/PID/task/TID/status (or /proc/PID/status) file.
func ParseVoluntarySwitches(b []byte) (uint64, error) {
	for line := range bytes.Lines(b) {
		if v, ok := bytes.CutPrefix(line, []byte("voluntary_ctxt_switches:")); ok {
			return strconv.ParseUint(string(bytes.TrimSpace(v)), 10, 64)
		}
	}
	return 0, errors.New("no voluntary_ctxt_switches line")
}

// Sub returns u minus an earlier reading v: what was used in between.
func (u Usage) Sub(v Usage) Usage {
	return Usage{UserTicks: u.UserTicks - v.UserTicks, SysTicks: u.SysTicks - v.SysTicks,
		ReadCalls: u.ReadCalls - v.ReadCalls, WriteCalls: u.WriteCalls - v.WriteCalls,
		Sleeps: u.Sleeps - v.Sleeps}
}

// User is the CPU time spent in user mode.
func (u Usage) User() time.Duration { return ticks(u.UserTicks) }

// Sys is the CPU time spent in the kernel on the process's behalf.
func (u Usage) Sys() time.Duration { return ticks(u.SysTicks) }

// CPU is the CPU time, user and kernel mode together.
func (u Usage) CPU() time.Duration { return ticks(u.UserTicks + u.SysTicks) }

// Syscalls is the count of read and write system calls.
func (u Usage) Syscalls() uint64 { return u.ReadCalls + u.WriteCalls }

func ticks(n uint64) time.Duration {
	return time.Duration(n) * time.Second / time.Duration(ClockTicks())
}

// ParseStat returns utime and stime, in clock ticks, of the contents of a
// /proc/PID/stat file. The command name, field 2, is in parentheses and may
// itself hold spaces and parentheses: the fields are counted from its last
// closing parenthesis.
func ParseStat(b []byte) (user, sys uint64, err error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, errors.New("no command name in parentheses")
	}
	// After ") ": field 3 (state) is fields[0], so field n is fields[n-3].
	fields := bytes.Fields(b[i+1:])
	const utime, stime = 14 - 3, 15 - 3
	if len(fields) <= stime {
		return 0, 0, fmt.Errorf("%d fields after the command name, want at least %d", len(fields), stime+1)
	}
	if user, err = strconv.ParseUint(string(fields[utime]), 10, 64); err != nil {
		return 0, 0, fmt.Errorf("utime: %w", err)
	}
	if sys, err = strconv.ParseUint(string(fields[stime]), 10, 64); err != nil {
		return 0, 0, fmt.Errorf("stime: %w", err)
	}
	return user, sys, nil
}

// ParseIO returns syscr and syscw of the contents of a /proc/PID/io file.
func ParseIO(b []byte) (reads, writes uint64, err error) {
	var haveR, haveW bool
	for line := range bytes.Lines(b) {
		name, value, ok := bytes.Cut(bytes.TrimSpace(line), []byte(":"))
		if !ok {
			continue
		}
		var dst *uint64
		switch string(name) {
		case "syscr":
			dst, haveR = &reads, true
		case "syscw":
			dst, haveW = &writes, true
		default:
			continue
		}
		if *dst, err = strconv.ParseUint(string(bytes.TrimSpace(value)), 10, 64); err != nil {
			return 0, 0, fmt.Errorf("%s: %w", name, err)
		}
	}
	if !haveR || !haveW {
		return 0, 0, errors.New("no syscr or syscw line")
	}
	return reads, writes, nil
}

// ClockTicks is the rate of the clock ticks /proc/PID/stat counts in, per
// second: sysconf(_SC_CLK_TCK), which the kernel hands every process in its
// auxiliary vector (AT_CLKTCK). It is 100 on every Linux in use (USER_HZ,
// whatever the kernel's own HZ); 100 is also the answer when the vector
// cannot be read.
func ClockTicks() int64 { return clockTicks() }

var clockTicks = sync.OnceValue(func() int64 {
	b, err := os.ReadFile("/proc/self/auxv")
	if err != nil {
		return defaultClockTicks
	}
	if hz, ok := AuxvValue(b, strconv.IntSize/8, atClkTck); ok && hz > 0 {
		return int64(hz)
	}
	return defaultClockTicks
})

const (
	defaultClockTicks = 100
	atClkTck          = 17 // AT_CLKTCK, <linux/auxvec.h>
)

// AuxvValue returns the value of entry typ of an auxiliary vector (the
// contents of /proc/PID/auxv: pairs of native-endian words of wordSize
// bytes, type then value, ending with type 0), and whether it has one.
func AuxvValue(b []byte, wordSize int, typ uint64) (uint64, bool) {
	word := func(b []byte) uint64 {
		if wordSize == 4 {
			return uint64(binary.NativeEndian.Uint32(b))
		}
		return binary.NativeEndian.Uint64(b)
	}
	if wordSize != 4 && wordSize != 8 {
		return 0, false
	}
	for ; len(b) >= 2*wordSize; b = b[2*wordSize:] {
		t, v := word(b), word(b[wordSize:])
		if t == 0 {
			break
		}
		if t == typ {
			return v, true
		}
	}
	return 0, false
}

// Machine is the CPU time of every core of the machine together, from the
// "cpu" line of /proc/stat, in clock ticks.
type Machine struct {
	// Busy is the time not idle: user, nice, system, irq, softirq, steal.
	Busy uint64
	// Total is Busy plus idle and iowait.
	Total uint64
}

// ReadMachine reads the machine's CPU time from /proc/stat.
func ReadMachine() (Machine, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return Machine{}, fmt.Errorf("read machine cpu time: %w", err)
	}
	return ParseMachine(b)
}

// Sub returns m minus an earlier reading n.
func (m Machine) Sub(n Machine) Machine {
	return Machine{Busy: m.Busy - n.Busy, Total: m.Total - n.Total}
}

// ParseMachine reads the contents of /proc/stat: its first line, "cpu"
// followed by user, nice, system, idle, iowait, irq, softirq and steal
// (guest time is within user already, and not added again).
func ParseMachine(b []byte) (Machine, error) {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	fields := bytes.Fields(line)
	if len(fields) < 9 || string(fields[0]) != "cpu" {
		return Machine{}, errors.New(`/proc/stat: no "cpu" line of 8 counters first`)
	}
	var m Machine
	for i, f := range fields[1:9] {
		v, err := strconv.ParseUint(string(f), 10, 64)
		if err != nil {
			return Machine{}, fmt.Errorf("/proc/stat: cpu field %d: %w", i+1, err)
		}
		m.Total += v
		if i != 3 && i != 4 { // idle, iowait
			m.Busy += v
		}
	}
	return m, nil
}
