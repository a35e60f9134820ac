//go:build !linux

package blockstore

func ioFlusherThread() error { return nil }
