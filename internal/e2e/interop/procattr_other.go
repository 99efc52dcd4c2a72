//go:build !linux

package interop

import "syscall"

// childAttr: the child is stopped by Close only.
func childAttr() *syscall.SysProcAttr { return nil }
