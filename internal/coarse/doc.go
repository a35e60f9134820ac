// Package coarse is a clock for the hot paths that only need to know the
// time to within tens of milliseconds: idle and write deadlines, cache
// ages, last-activity stamps. Reading it is one atomic load; one goroutine
// reads the real clock every Resolution and publishes it.
//
// A clock read is cheap on a host with the vDSO, but every read is a
// system call where there is none, as in a User-Mode Linux guest (the
// e2e tests and make bench's kernel-client section): there, profiles of
// dstore serve showed reads of the clock on every NFS reply and every
// attribute lookup taking a fifth to a half of the server's CPU, some of it
// under the block store's mutex.
package coarse
