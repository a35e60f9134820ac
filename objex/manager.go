package objex

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dstore/dstore/blockstore"
	"github.com/dstore/dstore/snapstore"
	bolt "go.etcd.io/bbolt"
)

// Config configures a Manager.
type Config struct {
	// Dir holds the manager's state (ox.db, cached manifests); one per
	// datastore, e.g. <data>/ox.
	Dir    string
	Logger *slog.Logger
	// Getenv reads passphrase variables; nil = os.Getenv.
	Getenv func(string) string
	// Retry is the policy of background transfers (exports, thickening,
	// listings); DemandRetry that of reads of imported files, which an
	// NFS client waits for: a few quick tries, then the read fails (EIO).
	Retry       RetryPolicy
	DemandRetry RetryPolicy
	// Transport replaces the HTTP transport of S3 targets (tests).
	Transport http.RoundTripper
	// ThickenBatch is how many blocks a thickener moves per step; 0 = 256.
	ThickenBatch int
	// NoResume: Attach does not restart unfinished exports and thickeners
	// (a short-lived process, such as a command run without the daemon,
	// would only start and stop them); the next Attach without it does.
	NoResume bool
}

// Manager runs a datastore's object exchange: targets, exports, imports
// and their thickeners, and the remote bases of imported files.
type Manager struct {
	cfg Config
	log *slog.Logger
	st  *state

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	cfgMu sync.Mutex // serializes changes of target configuration

	mu      sync.Mutex // guards the maps below; never held across I/O
	targets map[string]*target
	ds      *snapstore.Datastore
	bases   map[string]*remoteBasis
	jobs    map[uint64]*Job
	thick   map[uint64]bool // remote layers with a running thickener

	demand   atomic.Int64 // demand reads in flight (thickeners yield to them)
	fetched  atomic.Int64 // bytes GET from targets
	uploaded atomic.Int64 // bytes PUT to targets
}

// Open opens (or creates) the manager's state in cfg.Dir.
func Open(cfg Config) (*Manager, error) {
	if cfg.Dir == "" {
		return nil, errors.New("objex: Config.Dir is empty")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Getenv == nil {
		cfg.Getenv = os.Getenv
	}
	if cfg.DemandRetry == (RetryPolicy{}) {
		cfg.DemandRetry = RetryPolicy{Attempts: 3, Base: 100 * time.Millisecond, Max: time.Second, Timeout: 15 * time.Second}
	}
	if cfg.ThickenBatch <= 0 {
		cfg.ThickenBatch = 256
	}
	st, err := openState(cfg.Dir)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Manager{cfg: cfg, log: cfg.Logger, st: st, ctx: ctx, cancel: cancel,
		targets: map[string]*target{}, bases: map[string]*remoteBasis{}, jobs: map[uint64]*Job{}, thick: map[uint64]bool{}}
	m.wg.Add(1)
	go m.flusher()
	return m, nil
}

func (m *Manager) getenv(k string) string {
	if k == "" {
		return ""
	}
	return m.cfg.Getenv(k)
}

// flusher writes learned fingerprints every second.
func (m *Manager) flusher() {
	defer m.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
			if err := m.st.flushLearned(); err != nil {
				m.log.Warn("objex: saving learned fingerprints", "err", err)
			}
		}
	}
}

// Remote resolves the name of a remote layer to its basis: pass it as
// blockstore.Options.Remote when opening the datastore.
func (m *Manager) Remote(name string) (blockstore.RemoteBasis, error) {
	return m.basis(name)
}

// Attach connects the manager to the open datastore whose Options.Remote
// is m.Remote, and resumes interrupted exports and thickeners (unless
// Config.NoResume).
func (m *Manager) Attach(ds *snapstore.Datastore) error {
	if err := m.st.checkDatastore(ds.Blocks.ID()); err != nil {
		return err
	}
	m.mu.Lock()
	m.ds = ds
	m.mu.Unlock()
	// A chunk that fails verification locally is read from a target that
	// holds a copy, and rewritten (repair.go).
	ds.Blocks.SetRepairer(m)
	if m.cfg.NoResume {
		return nil
	}
	recs, err := m.jobRecords()
	if err != nil {
		return err
	}
	for _, r := range recs {
		if r.Kind == "export" && (r.State == "running" || r.State == "queued") {
			m.startExport(r)
		}
	}
	imps, err := m.importRecords()
	if err != nil {
		return err
	}
	for _, r := range imps {
		if r.State != "thick" {
			m.startThickener(r)
		}
	}
	return nil
}

// Close stops every job (they resume at the next Attach) and closes the
// state. Close the manager before the datastore.
func (m *Manager) Close() error {
	m.mu.Lock()
	ds := m.ds
	m.mu.Unlock()
	if ds != nil {
		ds.Blocks.SetRepairer(nil)
	}
	m.cancel()
	m.wg.Wait()
	return m.st.close()
}

// Stats are the manager's transfer counters since Open.
type Stats struct {
	RemoteBytesFetched int64 `json:"remote_bytes_fetched"`
	BytesUploaded      int64 `json:"bytes_uploaded"`
}

// Stats returns the transfer counters.
func (m *Manager) Stats() Stats {
	return Stats{RemoteBytesFetched: m.fetched.Load(), BytesUploaded: m.uploaded.Load()}
}

func (m *Manager) datastore() (*snapstore.Datastore, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ds == nil {
		return nil, errors.New("objex: no datastore attached")
	}
	return m.ds, nil
}

// Job states.
const (
	JobQueued  = "queued"
	JobRunning = "running"
	JobDone    = "done"
	JobFailed  = "failed"
)

// JobInfo describes an export, or an import and its thickening.
type JobInfo struct {
	ID         uint64  `json:"id"`
	Kind       string  `json:"kind"` // "export" or "import"
	State      string  `json:"state"`
	Target     string  `json:"target"`
	Snapshot   string  `json:"snapshot"`
	Path       string  `json:"path,omitempty"`
	BytesDone  int64   `json:"bytes_done"`
	BytesTotal int64   `json:"bytes_total"`
	BytesMoved int64   `json:"bytes_moved"` // uploaded (export) or fetched (thickening)
	Rate       float64 `json:"rate"`        // bytes moved per second so far
	Started    int64   `json:"started_ns"`
	Finished   int64   `json:"finished_ns,omitempty"`
	Error      string  `json:"error,omitempty"`
}

// Job is a running or finished job.
type Job struct {
	mu   sync.Mutex
	info JobInfo
	done chan struct{}
	err  error
}

func newJob(info JobInfo) *Job {
	info.Started = time.Now().UnixNano()
	return &Job{info: info, done: make(chan struct{})}
}

// Info returns the job's current state.
func (j *Job) Info() JobInfo {
	j.mu.Lock()
	defer j.mu.Unlock()
	in := j.info
	if el := time.Duration(time.Now().UnixNano() - in.Started); in.Finished == 0 && el > 0 {
		in.Rate = float64(in.BytesMoved) / el.Seconds()
	} else if in.Finished > in.Started {
		in.Rate = float64(in.BytesMoved) / time.Duration(in.Finished-in.Started).Seconds()
	}
	return in
}

// Wait waits for the job to end and returns its error.
func (j *Job) Wait(ctx context.Context) error {
	select {
	case <-j.done:
		return j.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Done is closed when the job ends.
func (j *Job) Done() <-chan struct{} { return j.done }

func (j *Job) update(fn func(*JobInfo)) {
	j.mu.Lock()
	fn(&j.info)
	j.mu.Unlock()
}

func (j *Job) finish(err error) {
	j.mu.Lock()
	j.info.Finished = time.Now().UnixNano()
	if err != nil {
		j.info.State, j.info.Error = JobFailed, err.Error()
	} else {
		j.info.State, j.info.Error = JobDone, ""
	}
	j.err = err
	j.mu.Unlock()
	close(j.done)
}

// Jobs lists the jobs of this run, and finished jobs of earlier runs, by
// ID.
func (m *Manager) Jobs() []JobInfo {
	m.mu.Lock()
	var out []JobInfo
	seen := map[uint64]bool{}
	for id, j := range m.jobs {
		out = append(out, j.Info())
		seen[id] = true
	}
	m.mu.Unlock()
	if recs, err := m.jobRecords(); err == nil {
		for _, r := range recs {
			if !seen[r.ID] {
				out = append(out, JobInfo{ID: r.ID, Kind: r.Kind, State: r.State, Target: r.TargetName,
					Snapshot: r.Name, BytesDone: r.BytesDone, BytesTotal: r.BytesTotal, Error: r.Error})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Job returns a job of this run.
func (m *Manager) Job(id uint64) (*Job, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	j, ok := m.jobs[id]
	return j, ok
}

// jobRecord is a job's record in the state (bucket jobs), what resumes it.
type jobRecord struct {
	ID         uint64 `json:"id"`
	Kind       string `json:"kind"`
	State      string `json:"state"`
	TargetName string `json:"target"`
	Seq        uint64 `json:"seq"`
	Name       string `json:"name"`
	BytesDone  int64  `json:"bytes_done"`
	BytesTotal int64  `json:"bytes_total"`
	Error      string `json:"error,omitempty"`
}

func (m *Manager) jobRecords() ([]jobRecord, error) {
	var out []jobRecord
	err := m.st.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bJobs).ForEach(func(k, v []byte) error {
			var r jobRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("objex: job record: %w", err)
			}
			out = append(out, r)
			return nil
		})
	})
	return out, err
}

// importRecord is an imported file's record (bucket imports).
type importRecord struct {
	Layer  uint64 `json:"layer"` // the remote layer
	Basis  string `json:"basis"`
	Target string `json:"target"` // target ID
	Name   string `json:"name"`   // snapshot (manifest) name
	File   int    `json:"file"`
	Path   string `json:"path"`
	State  string `json:"state"` // "thickening" or "thick"
	JobID  uint64 `json:"job"`
}

func (m *Manager) importRecords() ([]importRecord, error) {
	var out []importRecord
	err := m.st.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bImports).ForEach(func(k, v []byte) error {
			var r importRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("objex: import record: %w", err)
			}
			out = append(out, r)
			return nil
		})
	})
	return out, err
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
