package interop

import "syscall"

// childAttr makes the kernel SIGKILL the child when the test binary exits,
// so that no eventlog dev outlives a test binary that panicked or was killed.
func childAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} }
