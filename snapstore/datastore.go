package snapstore

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/dstore/dstore/blockstore"
)

// Datastore is an open datastore: the block store and the namespace over
// it.
type Datastore struct {
	Blocks *blockstore.Store
	NS     *Namespace

	stop chan struct{}
	wg   sync.WaitGroup
}

// Open opens the datastore in dir (which blockstore.Init made).
func Open(dir string, o blockstore.Options) (*Datastore, error) {
	ns, ext := New(o.Logger)
	o.Extension = ext
	bs, err := blockstore.Open(dir, o)
	if err != nil {
		return nil, err
	}
	if err := ns.Attach(bs); err != nil {
		bs.Close()
		return nil, err
	}
	d := &Datastore{Blocks: bs, NS: ns, stop: make(chan struct{})}
	d.wg.Add(1)
	go d.flusher()
	return d, nil
}

// flusher logs the times that writes changed, so they are at most a second
// behind the data after a crash.
func (d *Datastore) flusher() {
	defer d.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-d.stop:
			return
		case <-t.C:
			if err := d.NS.FlushTimes(); err != nil && !errors.Is(err, blockstore.ErrClosed) {
				d.NS.logger.Warn("snapstore: flushing file times", "err", err)
			}
		}
	}
}

// StartAutoGC runs the block store's background garbage collection
// (blockstore.Store.AutoGC) until Close.
func (d *Datastore) StartAutoGC(o blockstore.AutoGCOptions) {
	ctx, cancel := context.WithCancel(context.Background())
	d.wg.Add(2)
	go func() {
		defer d.wg.Done()
		d.Blocks.AutoGC(ctx, o)
	}()
	go func() {
		defer d.wg.Done()
		<-d.stop
		cancel()
	}()
}

// Close flushes everything and closes the datastore.
func (d *Datastore) Close() error {
	close(d.stop)
	d.wg.Wait()
	ferr := d.NS.FlushTimes()
	err := d.Blocks.Close()
	if ferr != nil && !errors.Is(ferr, blockstore.ErrClosed) {
		return ferr
	}
	return err
}

// FlushTimes logs the times of every file whose writes changed them, in
// one record, and waits until it is durable.
func (ns *Namespace) FlushTimes() error {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	// Payloads stay well under the block store's 1 MiB extension limit.
	const perRecord = 1000
	var ds []delta
	var end blockstore.LSN
	for _, n := range ns.nodes {
		if !n.dirty {
			continue
		}
		ds = append(ds, delta{kind: dPutInode, inode: n.inodeRec})
		if len(ds) == perRecord {
			e, err := ns.commitAsync(nil, ds, nil)
			if err != nil {
				return err
			}
			end, ds = e, nil
		}
	}
	if len(ds) > 0 {
		e, err := ns.commitAsync(nil, ds, nil)
		if err != nil {
			return err
		}
		end = e
	}
	for _, n := range ns.nodes {
		n.dirty = false
	}
	if end == 0 {
		return nil
	}
	ns.mu.Unlock()
	err := ns.bs.WaitDurable(end)
	ns.mu.Lock()
	return err
}
