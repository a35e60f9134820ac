package objex

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// faultProxy sits between the S3 client and versitygw and misbehaves on
// request: it refuses (down), answers 503 to the next n requests, delays
// answers, or cuts response bodies short.
type faultProxy struct {
	srv      *httptest.Server
	rp       *httputil.ReverseProxy
	mu       sync.Mutex
	down     bool
	fail5xx  int           // next n requests get a 503
	delay    time.Duration // added before every answer
	truncGet int           // next n GETs with a body have it cut in half
	requests atomic.Int64
	faults   atomic.Int64
}

func newFaultProxy(t *testing.T, upstream string) *faultProxy {
	u, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{rp: httputil.NewSingleHostReverseProxy(u)}
	p.srv = httptest.NewServer(http.HandlerFunc(p.serve))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *faultProxy) URL() string { return p.srv.URL }

func (p *faultProxy) set(fn func(p *faultProxy)) {
	p.mu.Lock()
	fn(p)
	p.mu.Unlock()
}

func (p *faultProxy) serve(w http.ResponseWriter, r *http.Request) {
	p.requests.Add(1)
	p.mu.Lock()
	down := p.down
	fail := p.fail5xx > 0
	if fail {
		p.fail5xx--
	}
	delay := p.delay
	trunc := false
	if r.Method == http.MethodGet && r.URL.Query().Get("list-type") == "" && r.URL.Path != "/" && p.truncGet > 0 {
		trunc = true
		p.truncGet--
	}
	p.mu.Unlock()
	if down {
		p.faults.Add(1)
		// Drop the connection without an answer.
		if hj, ok := w.(http.Hijacker); ok {
			if c, _, err := hj.Hijack(); err == nil {
				c.Close()
				return
			}
		}
		w.WriteHeader(http.StatusBadGateway)
		return
	}
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
	}
	if fail {
		p.faults.Add(1)
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>injected</Message></Error>`)
		return
	}
	if trunc {
		rec := httptest.NewRecorder()
		p.rp.ServeHTTP(rec, r)
		body := rec.Body.Bytes()
		if rec.Code/100 != 2 || len(body) < 2 {
			copyResponse(w, rec, body)
			return
		}
		p.faults.Add(1)
		// Promise the whole body, send half, and hang up.
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(rec.Code)
		w.Write(body[:len(body)/2])
		if hj, ok := w.(http.Hijacker); ok {
			if f, ok := w.(http.Flusher); ok {
				f.Flush()
			}
			if c, _, err := hj.Hijack(); err == nil {
				c.(*net.TCPConn).SetLinger(0)
				c.Close()
			}
		}
		return
	}
	p.rp.ServeHTTP(w, r)
}

func copyResponse(w http.ResponseWriter, rec *httptest.ResponseRecorder, body []byte) {
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	w.Write(body)
}
