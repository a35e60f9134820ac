//go:build !linux

package blockstore

func ioFlusherThread() error { return nil }

// CheckIOFlusher reports whether the log and pack writers can be marked as
// I/O flushers: only Linux has them, and only Linux needs them.
func CheckIOFlusher() error { return nil }

// ioFlusherSpan does nothing: see the Linux version.
func ioFlusherSpan() func() { return func() {} }
