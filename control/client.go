package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// maxResponse bounds an answer (a listing of a large snapshot tree).
const maxResponse = 1 << 30

// Client calls the daemon of a datastore over its control socket.
type Client struct {
	dir  string
	sock string
	tr   *http.Transport
	hc   *http.Client
}

// Dial connects to the daemon serving the datastore in dir. When no
// daemon answers (no socket, or a socket left by a daemon that died) the
// error wraps ErrNoDaemon; other errors (permission denied) mean a daemon
// may be running but cannot be reached.
func Dial(ctx context.Context, dir string) (*Client, error) {
	sock := filepath.Join(dir, SocketFile)
	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := d.DialContext(dctx, "unix", sock)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOTDIR) {
			return nil, &msgError{fmt.Sprintf("daemon not running on %s", dir), ErrNoDaemon}
		}
		return nil, fmt.Errorf("connecting to the daemon on %s: %w", sock, err)
	}
	c.Close()
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
		DisableCompression: true,
		MaxIdleConns:       2,
		IdleConnTimeout:    30 * time.Second,
	}
	return &Client{dir: dir, sock: sock, tr: tr, hc: &http.Client{Transport: tr}}, nil
}

// Close drops the client's idle connections.
func (c *Client) Close() error {
	c.tr.CloseIdleConnections()
	return nil
}

// Ping asks the daemon who it is.
func (c *Client) Ping(ctx context.Context) (Ping, error) {
	var p Ping
	err := c.do(ctx, http.MethodGet, "/v1/ping", nil, &p)
	return p, err
}

// Call runs op on the daemon.
func (c *Client) Call(ctx context.Context, op string, args, result any) error {
	body, err := json.Marshal(args)
	if err != nil {
		return fmt.Errorf("encoding the arguments of %s: %w", op, err)
	}
	return c.do(ctx, http.MethodPost, "/v1/"+op, body, result)
}

func (c *Client) do(ctx context.Context, method, path string, body []byte, result any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://dstore"+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("daemon on %s: %w", c.dir, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return fmt.Errorf("daemon on %s: reading the answer: %w", c.dir, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e wireErrorBody
		if json.Unmarshal(data, &e) != nil || e.Code == "" {
			return fmt.Errorf("daemon on %s answered %s: %.200s", c.dir, resp.Status, bytes.TrimSpace(data))
		}
		return errorFromWire(e.Code, e.Error, resp.StatusCode)
	}
	if err := json.Unmarshal(data, result); err != nil {
		return fmt.Errorf("daemon on %s: decoding the answer: %w", c.dir, err)
	}
	return nil
}

// Profile fetches the daemon's runtime profile name (see
// Service.serveProfile: "profile" is a CPU profile of seconds, "trace" an
// execution trace; heap, allocs, goroutine, mutex, block are snapshots)
// and copies it to w.
func (c *Client) Profile(ctx context.Context, name string, seconds int, w io.Writer) error {
	path := "/debug/pprof/" + url.PathEscape(name)
	if seconds > 0 {
		path += "?seconds=" + strconv.Itoa(seconds)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://dstore"+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("daemon on %s: %w", c.dir, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
		var e wireErrorBody
		if json.Unmarshal(data, &e) != nil || e.Code == "" {
			return fmt.Errorf("daemon on %s answered %s: %.200s", c.dir, resp.Status, bytes.TrimSpace(data))
		}
		return errorFromWire(e.Code, e.Error, resp.StatusCode)
	}
	if _, err := io.Copy(w, resp.Body); err != nil {
		return fmt.Errorf("daemon on %s: reading the profile: %w", c.dir, err)
	}
	return nil
}
