package objex

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// ObjectStore is where a target's objects live: a directory (file://) or an
// S3 bucket (s3://). Keys are slash-separated paths relative to the target's
// root (its directory, or its bucket and prefix). Implementations are safe
// for concurrent use.
//
// Every Put replaces an object whole: a reader sees the old object or the
// new one, never a part of either. That is what makes a manifest written
// last a commit point.
type ObjectStore interface {
	// Put stores data under key. A limiter in ctx (WithLimiter) paces the
	// upload.
	Put(ctx context.Context, key string, data []byte) error
	// Get returns n bytes of key starting at off; n < 0 reads to the end.
	// A range past the end of the object is an error wrapping ErrShort,
	// and a missing object one wrapping ErrNotExist. A limiter in ctx
	// paces the download.
	Get(ctx context.Context, key string, off, n int64) ([]byte, error)
	// Stat describes one object (ErrNotExist when missing).
	Stat(ctx context.Context, key string) (ObjectInfo, error)
	// List calls fn for every object whose key starts with prefix, in key
	// order.
	List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error
	// Delete removes an object; a missing one is not an error.
	Delete(ctx context.Context, key string) error
	// String names the store for logs and errors, without credentials.
	String() string
}

// ObjectInfo describes a stored object.
type ObjectInfo struct {
	Key      string
	Size     int64
	Modified time.Time
}

var (
	// ErrNotExist is returned for an object that is not in the store.
	ErrNotExist = errors.New("objex: no such object")
	// ErrShort is returned when an object holds fewer bytes than asked for:
	// a truncated object, or a truncated response.
	ErrShort = errors.New("objex: object shorter than expected")
	// ErrCorrupt marks target data that failed authentication or is
	// malformed: a tampered, truncated or swapped object or manifest. It
	// is never turned into zeros or wrong bytes.
	ErrCorrupt = errors.New("objex: corrupt or tampered target data")
	// ErrKey is returned when the key file or passphrase does not open the
	// target's key.
	ErrKey = errors.New("objex: wrong key for this target")
)

// StoreOptions configure a backend. Empty fields fall back to the
// environment (AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY) and then to defaults.
type StoreOptions struct {
	Endpoint  string // S3: "https://host:port" or "http://host:port"; a bare host:port means TLS
	Region    string
	AccessKey string
	SecretKey string
	// Insecure allows a plain HTTP endpoint given without a scheme.
	Insecure bool
	// Retry: attempts and backoff for transient failures (5xx, throttling,
	// timeouts, resets, truncated bodies). Zero values are defaults.
	Retry RetryPolicy
	// Transport replaces the HTTP transport (tests, proxies).
	Transport http.RoundTripper
}

// RetryPolicy says how often and how patiently a transient failure is
// retried before it is reported.
type RetryPolicy struct {
	Attempts int           // total tries; 0 = 6
	Base     time.Duration // first backoff; 0 = 200 ms, doubling
	Max      time.Duration // backoff ceiling; 0 = 10 s
	// Timeout bounds one attempt of a Get, Stat, List or Delete, and of a
	// Put per 4 MiB of data (at least one Timeout). 0 = 60 s.
	Timeout time.Duration
}

func (p RetryPolicy) norm() RetryPolicy {
	if p.Attempts <= 0 {
		p.Attempts = 6
	}
	if p.Base <= 0 {
		p.Base = 200 * time.Millisecond
	}
	if p.Max <= 0 {
		p.Max = 10 * time.Second
	}
	if p.Timeout <= 0 {
		p.Timeout = 60 * time.Second
	}
	return p
}

// OpenStore opens the object store a target URL names: file:///dir or
// s3://bucket/prefix. The bucket is created when missing.
func OpenStore(ctx context.Context, rawURL string, o StoreOptions) (ObjectStore, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("objex: target URL: %w", err)
	}
	switch u.Scheme {
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return nil, fmt.Errorf("objex: file URL %q names a host; use file:///absolute/dir", rawURL)
		}
		if u.Path == "" || !strings.HasPrefix(u.Path, "/") {
			return nil, fmt.Errorf("objex: file URL %q needs an absolute directory", rawURL)
		}
		fs, err := newFileStore(u.Path)
		if err != nil {
			return nil, err
		}
		return withRetry(fs, o.Retry), nil
	case "s3":
		s, err := newS3Store(ctx, u, o)
		if err != nil {
			return nil, err
		}
		return withRetry(s, o.Retry), nil
	default:
		return nil, fmt.Errorf("objex: target URL %q: want file:///dir or s3://bucket/prefix", rawURL)
	}
}

// transient marks an error worth retrying.
type transientError struct{ err error }

func (e *transientError) Error() string { return e.err.Error() }
func (e *transientError) Unwrap() error { return e.err }

func transient(err error) error {
	if err == nil {
		return nil
	}
	return &transientError{err}
}

// isTransient decides whether err may go away on its own.
func isTransient(err error) bool {
	if err == nil {
		return false
	}
	var te *transientError
	if errors.As(err, &te) {
		return true
	}
	if errors.Is(err, ErrShort) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	return false
}

// retrying wraps a store with retries and per-attempt timeouts.
type retrying struct {
	ObjectStore
	p RetryPolicy
}

func withRetry(s ObjectStore, p RetryPolicy) ObjectStore {
	return &retrying{ObjectStore: s, p: p.norm()}
}

// do runs op until it succeeds, fails for good, or runs out of attempts.
// Each attempt gets its own deadline, so a stalled server costs one
// timeout, not the caller's whole budget.
func (r *retrying) do(ctx context.Context, what string, timeout time.Duration, op func(ctx context.Context) error) error {
	var err error
	backoff := r.p.Base
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, timeout)
		err = op(actx)
		timedOut := actx.Err() != nil && ctx.Err() == nil
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s on %s: %w", what, r.ObjectStore, ctx.Err())
		}
		if !timedOut && !isTransient(err) {
			return fmt.Errorf("%s on %s: %w", what, r.ObjectStore, err)
		}
		if attempt >= r.p.Attempts {
			return fmt.Errorf("%s on %s: still failing after %d attempts: %w", what, r.ObjectStore, attempt, err)
		}
		// Full jitter keeps many clients from retrying in step.
		d := backoff/2 + rand.N(backoff/2+1)
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s on %s: %w (last error: %v)", what, r.ObjectStore, ctx.Err(), err)
		case <-time.After(d):
		}
		backoff = min(2*backoff, r.p.Max)
	}
}

func (r *retrying) Put(ctx context.Context, key string, data []byte) error {
	t := r.p.Timeout * time.Duration(1+len(data)/(4<<20))
	if l := limiterFrom(ctx); l != nil {
		// Pacing is not the server's slowness: give each attempt the time
		// the limiter needs for the data on top.
		t += l.duration(int64(len(data)))
	}
	return r.do(ctx, "put "+key, t, func(ctx context.Context) error {
		return r.ObjectStore.Put(ctx, key, data)
	})
}

func (r *retrying) Get(ctx context.Context, key string, off, n int64) ([]byte, error) {
	var out []byte
	t := r.p.Timeout
	if n > 0 {
		t *= time.Duration(1 + n/(4<<20))
		if l := limiterFrom(ctx); l != nil {
			t += l.duration(n)
		}
	} else if n < 0 {
		t *= 4
	}
	err := r.do(ctx, "get "+key, t, func(ctx context.Context) error {
		b, err := r.ObjectStore.Get(ctx, key, off, n)
		out = b
		if errors.Is(err, ErrShort) && n > 0 {
			// A cut response, or a truncated object? The object's size
			// tells: a truncation is permanent, and corruption.
			if st, serr := r.ObjectStore.Stat(ctx, key); serr == nil && st.Size < off+n {
				return fmt.Errorf("%s is %d bytes, %d needed: truncated: %w", key, st.Size, off+n, ErrCorrupt)
			}
		}
		return err
	})
	return out, err
}

func (r *retrying) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	var out ObjectInfo
	err := r.do(ctx, "stat "+key, r.p.Timeout, func(ctx context.Context) error {
		i, err := r.ObjectStore.Stat(ctx, key)
		out = i
		return err
	})
	return out, err
}

func (r *retrying) List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error {
	// A listing is retried whole; fn sees each key at most once.
	seen := ""
	return r.do(ctx, "list "+prefix, 4*r.p.Timeout, func(ctx context.Context) error {
		return r.ObjectStore.List(ctx, prefix, func(oi ObjectInfo) error {
			if seen != "" && oi.Key <= seen {
				return nil
			}
			seen = oi.Key
			return fn(oi)
		})
	})
}

func (r *retrying) Delete(ctx context.Context, key string) error {
	return r.do(ctx, "delete "+key, r.p.Timeout, func(ctx context.Context) error {
		return r.ObjectStore.Delete(ctx, key)
	})
}

// validKey refuses keys that could escape a file store's directory or that
// S3 would treat oddly.
func validKey(key string) error {
	if key == "" || len(key) > 900 || strings.HasPrefix(key, "/") || strings.Contains(key, "//") ||
		strings.Contains(key, "\\") || strings.ContainsRune(key, 0) {
		return fmt.Errorf("objex: invalid object key %q", key)
	}
	for _, part := range strings.Split(key, "/") {
		if part == "." || part == ".." {
			return fmt.Errorf("objex: invalid object key %q", key)
		}
	}
	return nil
}
