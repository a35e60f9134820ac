package objex

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TargetSpec describes a target to add.
type TargetSpec struct {
	Name string
	URL  string // file:///dir or s3://bucket/prefix
	// Store: endpoint, region, credentials. Credentials given here are
	// kept in the manager's state (mode 0600) and never shown; leave them
	// empty to take them from the environment at every use.
	Store StoreOptions
	// KeyFile or PassphraseEnv (the name of an environment variable that
	// holds the passphrase when the target is used): exactly one. The
	// passphrase itself is never stored.
	KeyFile       string
	PassphraseEnv string
	// Bandwidth in bytes per second for background transfers (exports,
	// thickening); 0 = unlimited.
	Bandwidth int64
	// ObjectSize of new data objects; 0 = 32 MiB.
	ObjectSize int64
	// Argon2 overrides the passphrase KDF cost (tests).
	Argon2 Argon2Params
}

// TargetInfo describes a configured target; it never holds credentials.
type TargetInfo struct {
	Name      string `json:"name"`
	URL       string `json:"url"`
	ID        string `json:"id"`
	Endpoint  string `json:"endpoint,omitempty"`
	Region    string `json:"region,omitempty"`
	KeyFile   string `json:"key_file,omitempty"`
	PassEnv   string `json:"passphrase_env,omitempty"`
	Bandwidth int64  `json:"bandwidth"`
}

// targetConfig is a target's record in the state (bucket targets).
type targetConfig struct {
	Name       string       `json:"name"`
	URL        string       `json:"url"`
	ID         string       `json:"id"`
	Endpoint   string       `json:"endpoint,omitempty"`
	Region     string       `json:"region,omitempty"`
	Insecure   bool         `json:"insecure,omitempty"`
	AccessKey  string       `json:"access_key,omitempty"`
	SecretKey  string       `json:"secret_key,omitempty"`
	KeyFile    string       `json:"key_file,omitempty"`
	PassEnv    string       `json:"passphrase_env,omitempty"`
	Bandwidth  int64        `json:"bandwidth"`
	ObjectSize int64        `json:"object_size,omitempty"`
	Argon2     Argon2Params `json:"argon2"`
}

func (c *targetConfig) info() TargetInfo {
	return TargetInfo{Name: c.Name, URL: c.URL, ID: c.ID, Endpoint: c.Endpoint, Region: c.Region,
		KeyFile: c.KeyFile, PassEnv: c.PassEnv, Bandwidth: c.Bandwidth}
}

var targetNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// target is an open target: its store, keys and limiter.
type target struct {
	cfg   targetConfig
	id    [16]byte
	st    ObjectStore // background operations: patient retries
	fast  ObjectStore // demand reads: a few quick retries, then EIO
	keys  *keys
	lim   *Limiter
	bs    int   // not fixed per target; set per manifest
	osize int64 // data object size

	syncMu sync.Mutex // one index sync at a time
	expMu  sync.Mutex // one export at a time per target
}

func (m *Manager) storeOptions(c *targetConfig) StoreOptions {
	o := StoreOptions{Endpoint: c.Endpoint, Region: c.Region, Insecure: c.Insecure, AccessKey: c.AccessKey,
		SecretKey: c.SecretKey, Retry: m.cfg.Retry, Transport: m.cfg.Transport}
	return o
}

func (m *Manager) keySource(c *targetConfig) (KeySource, error) {
	if c.KeyFile != "" {
		return KeySource{KeyFile: c.KeyFile, Argon2: c.Argon2}, nil
	}
	p := m.getenv(c.PassEnv)
	if p == "" {
		return KeySource{}, fmt.Errorf("objex: target %s: the passphrase variable %s is empty or unset", c.Name, c.PassEnv)
	}
	return KeySource{Passphrase: []byte(p), Argon2: c.Argon2}, nil
}

// openRaw opens the backend of a target without retries.
func openRaw(ctx context.Context, rawURL string, o StoreOptions) (ObjectStore, error) {
	st, err := OpenStore(ctx, rawURL, o)
	if err != nil {
		return nil, err
	}
	return st.(*retrying).ObjectStore, nil
}

// openTarget connects to the target, and creates its key when create is
// set and the target holds none.
func (m *Manager) openTarget(ctx context.Context, c *targetConfig, create bool) (*target, error) {
	raw, err := openRaw(ctx, c.URL, m.storeOptions(c))
	if err != nil {
		return nil, err
	}
	t := &target{cfg: *c, st: withRetry(raw, m.cfg.Retry), fast: withRetry(raw, m.cfg.DemandRetry),
		lim: NewLimiter(c.Bandwidth), osize: c.ObjectSize}
	if t.osize <= 0 {
		t.osize = defaultObjBytes
	}
	src, err := m.keySource(c)
	if err != nil {
		return nil, err
	}
	ko, err := loadKeyObject(ctx, t.st)
	if errors.Is(err, ErrNotExist) && create {
		var id [16]byte
		rand.Read(id[:])
		mk := make([]byte, 32)
		rand.Read(mk)
		if ko, err = wrapKey(id, mk, src); err != nil {
			return nil, err
		}
		// Nothing else may be in a new target's place: a directory or
		// prefix with objects but no key is somebody else's.
		var other string
		t.st.List(ctx, "", func(oi ObjectInfo) error {
			other = oi.Key
			return errStop
		})
		if other != "" {
			return nil, fmt.Errorf("objex: %s holds objects (%s) but no dstore key: not a target", t.st, other)
		}
		if err := putKeyObject(ctx, t.st, ko); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, fmt.Errorf("objex: target %s: key object: %w", c.Name, err)
	}
	id, mk, err := unwrapKey(ko, src)
	if err != nil {
		return nil, fmt.Errorf("objex: target %s: %w", c.Name, err)
	}
	if c.ID != "" && c.ID != hex.EncodeToString(id[:]) {
		return nil, fmt.Errorf("objex: target %s: the store holds target %x, not %s: %w", c.Name, id, c.ID, ErrKey)
	}
	t.id = id
	t.keys = deriveKeys(id, mk)
	return t, nil
}

var errStop = errors.New("stop")

// AddTarget configures a target. A place with no target yet gets a new
// random key, wrapped by the key file or passphrase; an existing target
// (made by this or another datastore) is joined, which needs its key.
func (m *Manager) AddTarget(ctx context.Context, spec TargetSpec) (TargetInfo, error) {
	if !targetNameRE.MatchString(spec.Name) {
		return TargetInfo{}, fmt.Errorf("objex: target name %q: 1..64 letters, digits, '.', '_', '-'", spec.Name)
	}
	if (spec.KeyFile == "") == (spec.PassphraseEnv == "") {
		return TargetInfo{}, errors.New("objex: give exactly one of a key file and a passphrase variable")
	}
	if spec.Bandwidth < 0 {
		return TargetInfo{}, errors.New("objex: negative bandwidth")
	}
	keyFile := spec.KeyFile
	if keyFile != "" {
		abs, err := filepath.Abs(keyFile)
		if err != nil {
			return TargetInfo{}, err
		}
		keyFile = abs
		if _, err := os.Stat(keyFile); err != nil {
			return TargetInfo{}, fmt.Errorf("objex: key file: %w", err)
		}
	}
	c := targetConfig{Name: spec.Name, URL: spec.URL, Endpoint: spec.Store.Endpoint, Region: spec.Store.Region,
		Insecure: spec.Store.Insecure, AccessKey: spec.Store.AccessKey, SecretKey: spec.Store.SecretKey,
		KeyFile: keyFile, PassEnv: spec.PassphraseEnv, Bandwidth: spec.Bandwidth, ObjectSize: spec.ObjectSize,
		Argon2: spec.Argon2}
	m.cfgMu.Lock()
	defer m.cfgMu.Unlock()
	if found, err := m.st.getJSON(bTargets, []byte(spec.Name), &targetConfig{}); err != nil {
		return TargetInfo{}, err
	} else if found {
		return TargetInfo{}, fmt.Errorf("objex: target %s already exists", spec.Name)
	}
	t, err := m.openTarget(ctx, &c, true)
	if err != nil {
		return TargetInfo{}, err
	}
	c.ID = hex.EncodeToString(t.id[:])
	t.cfg.ID = c.ID
	if err := m.st.ensureTargetBuckets(t.id); err != nil {
		return TargetInfo{}, err
	}
	if err := m.st.putJSON(bTargets, []byte(c.Name), &c); err != nil {
		return TargetInfo{}, err
	}
	m.mu.Lock()
	m.targets[c.Name] = t
	m.mu.Unlock()
	return c.info(), nil
}

// Targets lists the configured targets.
func (m *Manager) Targets() ([]TargetInfo, error) {
	var out []TargetInfo
	err := m.st.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bTargets).ForEach(func(k, v []byte) error {
			var c targetConfig
			if err := jsonUnmarshal(v, &c); err != nil {
				return err
			}
			out = append(out, c.info())
			return nil
		})
	})
	return out, err
}

// RemoveTarget forgets a target (its objects stay where they are). It
// refuses while imported files still read from it, unless force.
func (m *Manager) RemoveTarget(name string, force bool) error {
	m.cfgMu.Lock()
	defer m.cfgMu.Unlock()
	var c targetConfig
	found, err := m.st.getJSON(bTargets, []byte(name), &c)
	if err != nil {
		return err
	}
	if !found {
		return fmt.Errorf("objex: no target %s", name)
	}
	if !force {
		imps, err := m.importRecords()
		if err != nil {
			return err
		}
		for _, r := range imps {
			if r.Target == c.ID && r.State != "thick" {
				return fmt.Errorf("objex: target %s: imported file %s still reads from it (wait for thickening, or force)", name, r.Path)
			}
		}
	}
	raw, _ := hex.DecodeString(c.ID)
	var id [16]byte
	copy(id[:], raw)
	if err := m.st.dropTargetBuckets(id); err != nil {
		return err
	}
	m.mu.Lock()
	delete(m.targets, name)
	for k, rb := range m.bases {
		if rb.t.id == id {
			delete(m.bases, k)
		}
	}
	m.mu.Unlock()
	return m.st.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bTargets).Delete([]byte(name)) })
}

// SetBandwidth changes a target's bandwidth limit (bytes/s, 0 unlimited);
// running transfers follow at once.
func (m *Manager) SetBandwidth(name string, rate int64) error {
	if rate < 0 {
		return errors.New("objex: negative bandwidth")
	}
	m.cfgMu.Lock()
	defer m.cfgMu.Unlock()
	var c targetConfig
	found, err := m.st.getJSON(bTargets, []byte(name), &c)
	if err != nil {
		return err
	}
	if !found {
		return fmt.Errorf("objex: no target %s", name)
	}
	c.Bandwidth = rate
	if err := m.st.putJSON(bTargets, []byte(name), &c); err != nil {
		return err
	}
	m.mu.Lock()
	t := m.targets[name]
	m.mu.Unlock()
	if t != nil {
		t.lim.SetRate(rate)
	}
	return nil
}

// target returns the open target name, opening it on first use.
func (m *Manager) target(ctx context.Context, name string) (*target, error) {
	m.mu.Lock()
	t := m.targets[name]
	m.mu.Unlock()
	if t != nil {
		return t, nil
	}
	var c targetConfig
	found, err := m.st.getJSON(bTargets, []byte(name), &c)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, fmt.Errorf("objex: no target %s", name)
	}
	// Connecting may take a while (retries): no lock is held meanwhile.
	t, err = m.openTarget(ctx, &c, false)
	if err != nil {
		return nil, err
	}
	if err := m.st.ensureTargetBuckets(t.id); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if prev := m.targets[name]; prev != nil {
		return prev, nil
	}
	m.targets[name] = t
	return t, nil
}

// targetByID finds the configured target with this ID.
func (m *Manager) targetByID(ctx context.Context, id string) (*target, error) {
	var name string
	err := m.st.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bTargets).ForEach(func(k, v []byte) error {
			var c targetConfig
			if jsonUnmarshal(v, &c) == nil && c.ID == id {
				name = c.Name
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	if name == "" {
		return nil, fmt.Errorf("objex: no configured target has ID %s (add it again with its key)", id)
	}
	return m.target(ctx, name)
}

// Rekey wraps the target's master key under a new key file or passphrase
// variable. No data is re-uploaded: only the key object changes. Every
// datastore using the target needs the new key from then on.
func (m *Manager) Rekey(ctx context.Context, name, newKeyFile, newPassEnv string) error {
	if (newKeyFile == "") == (newPassEnv == "") {
		return errors.New("objex: give exactly one of a key file and a passphrase variable")
	}
	t, err := m.target(ctx, name)
	if err != nil {
		return err
	}
	m.cfgMu.Lock()
	defer m.cfgMu.Unlock()
	var old targetConfig
	if found, err := m.st.getJSON(bTargets, []byte(name), &old); err != nil {
		return err
	} else if !found {
		return fmt.Errorf("objex: no target %s", name)
	}
	c := old
	c.KeyFile, c.PassEnv = "", ""
	if newKeyFile != "" {
		if c.KeyFile, err = filepath.Abs(newKeyFile); err != nil {
			return err
		}
	} else {
		c.PassEnv = newPassEnv
	}
	src, err := m.keySource(&c)
	if err != nil {
		return err
	}
	// Unwrap with the old source once more: the master key is not kept
	// around in memory beyond the derived keys.
	oldSrc, err := m.keySource(&old)
	if err != nil {
		return err
	}
	ko, err := loadKeyObject(ctx, t.st)
	if err != nil {
		return err
	}
	_, mk, err := unwrapKey(ko, oldSrc)
	if err != nil {
		return fmt.Errorf("objex: target %s: the current key no longer opens it: %w", name, err)
	}
	nko, err := wrapKey(t.id, mk, src)
	if err != nil {
		return err
	}
	if err := putKeyObject(ctx, t.st, nko); err != nil {
		return err
	}
	if err := m.st.putJSON(bTargets, []byte(name), &c); err != nil {
		return err
	}
	// The open target keeps its keys (the master key did not change);
	// the next open reads the new key source from the config.
	return nil
}

// syncIndex brings the local cache of the target's chunk index up to date
// with its index objects: those written by other datastores, or by an
// export of ours that stopped before it noted them.
func (m *Manager) syncIndex(ctx context.Context, t *target) error {
	t.syncMu.Lock()
	defer t.syncMu.Unlock()
	known := map[ObjectID]bool{}
	err := m.st.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(tbucket(t.id, 'o')).ForEach(func(k, v []byte) error {
			var o ObjectID
			copy(o[:], k)
			known[o] = true
			return nil
		})
	})
	if err != nil {
		return err
	}
	var todo []ObjectID
	listed := map[ObjectID]bool{}
	err = t.st.List(ctx, indexPrefix, func(oi ObjectInfo) error {
		o, err := parseObjectID(path.Base(oi.Key))
		if err != nil || indexKey(o) != oi.Key {
			m.log.Warn("objex: ignoring a stray object among index objects", "target", t.cfg.Name, "key", oi.Key)
			return nil
		}
		listed[o] = true
		if !known[o] {
			todo = append(todo, o)
		}
		return nil
	})
	if err != nil {
		return err
	}
	// Objects pruned since (by any datastore): their chunks are gone.
	for o := range known {
		if !listed[o] {
			if err := m.forgetObject(t, o); err != nil {
				return err
			}
		}
	}
	for _, o := range todo {
		b, err := t.st.Get(ctx, indexKey(o), 0, -1)
		if err != nil {
			return err
		}
		body, err := t.keys.openMeta(metaIndex, indexKey(o), b)
		if err != nil {
			// A bad index object only costs re-uploading its chunks.
			m.log.Error("objex: index object failed verification; its chunks will be sent again", "target", t.cfg.Name, "object", o.String(), "err", err)
			continue
		}
		_, size, ents, err := decodeIndex(body, o)
		if err != nil {
			m.log.Error("objex: index object malformed; its chunks will be sent again", "target", t.cfg.Name, "object", o.String(), "err", err)
			continue
		}
		if err := m.noteObject(t, o, size, ents); err != nil {
			return err
		}
	}
	return nil
}

// noteObject records that the target holds object o with these chunks.
func (m *Manager) noteObject(t *target, o ObjectID, size int64, ents []indexEntry) error {
	return m.st.db.Update(func(tx *bolt.Tx) error {
		cb := tx.Bucket(tbucket(t.id, 'c'))
		ents = slices.Clone(ents)
		sort.Slice(ents, func(i, j int) bool { return bytes.Compare(ents[i].ID[:], ents[j].ID[:]) < 0 })
		for _, e := range ents {
			if cb.Get(e.ID[:]) != nil {
				continue // an earlier copy stays the one we name
			}
			if err := cb.Put(append([]byte(nil), e.ID[:]...), encodeLoc(chunkLoc{Obj: o, Off: e.Off, Len: e.Len})); err != nil {
				return err
			}
		}
		return tx.Bucket(tbucket(t.id, 'o')).Put(append([]byte(nil), o[:]...), binary.LittleEndian.AppendUint64(nil, uint64(size)))
	})
}

// loadManifest fetches, authenticates and decodes a manifest.
func (m *Manager) loadManifest(ctx context.Context, t *target, name string) (*manifest, []byte, error) {
	if err := ValidSnapshotName(name); err != nil {
		return nil, nil, err
	}
	b, err := t.st.Get(ctx, manifestKey(name), 0, -1)
	if err != nil {
		return nil, nil, err
	}
	mf, err := m.openManifest(t, name, b)
	return mf, b, err
}

func (m *Manager) openManifest(t *target, name string, sealed []byte) (*manifest, error) {
	body, err := t.keys.openMeta(metaManifest, manifestKey(name), sealed)
	if err != nil {
		return nil, err
	}
	return decodeManifest(body, name)
}

// Snapshots lists the snapshots a target holds, oldest export first.
// Each manifest is fetched and authenticated; one that fails is reported
// with Err set.
func (m *Manager) Snapshots(ctx context.Context, targetName string) ([]SnapshotEntry, error) {
	t, err := m.target(ctx, targetName)
	if err != nil {
		return nil, err
	}
	var names []string
	err = t.st.List(ctx, manifestPrefix, func(oi ObjectInfo) error {
		names = append(names, strings.TrimPrefix(oi.Key, manifestPrefix))
		return nil
	})
	if err != nil {
		return nil, err
	}
	var out []SnapshotEntry
	for _, n := range names {
		if ValidSnapshotName(n) != nil {
			continue
		}
		mf, _, err := m.loadManifest(ctx, t, n)
		if err != nil {
			out = append(out, SnapshotEntry{Name: n, Err: err.Error()})
			continue
		}
		out = append(out, SnapshotEntry{Name: n, Info: mf.Info})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Info.ExportedNs < out[j].Info.ExportedNs })
	return out, nil
}

// SnapshotEntry is one snapshot in a target.
type SnapshotEntry struct {
	Name string       `json:"name"`
	Info ManifestInfo `json:"info"`
	Err  string       `json:"error,omitempty"`
}

// DeleteSnapshot removes a snapshot's manifest from the target. Its chunks
// stay until Prune finds them unreferenced.
func (m *Manager) DeleteSnapshot(ctx context.Context, targetName, name string) error {
	t, err := m.target(ctx, targetName)
	if err != nil {
		return err
	}
	if err := ValidSnapshotName(name); err != nil {
		return err
	}
	if _, err := t.st.Stat(ctx, manifestKey(name)); err != nil {
		return err
	}
	return t.st.Delete(ctx, manifestKey(name))
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
