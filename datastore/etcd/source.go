package etcd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/connectivity"

	"github.com/felis-dev/felis/datastore"
	"github.com/felis-dev/felis/datastore/internal/track"
	"github.com/felis-dev/felis/model/store"
)

// SourceName is the name this datastore stamps into model.Source.Name.
const SourceName = "etcd"

func init() {
	datastore.Register("etcd", func(arg string) (datastore.Source, error) {
		if arg == "" {
			return nil, errors.New("--datastore etcd:URL needs a URL, e.g. etcd:http://127.0.0.1:2379")
		}
		s := New(strings.Split(arg, ",")...)
		cfg, err := TLSFromEnv(os.Getenv)
		if err != nil {
			return nil, err
		}
		s.TLS = cfg
		return s, nil
	})
}

// Default timings; the fields of Source of the same names override them.
const (
	DefaultDialTimeout = 5 * time.Second
	// DefaultCheckInterval is how often Watch checks the connection and, while out of sync,
	// asks etcd whether the watch has caught up.
	DefaultCheckInterval = 250 * time.Millisecond
	// DefaultRetryDelay is the pause before re-listing after a failed list or watch.
	DefaultRetryDelay = 500 * time.Millisecond
)

// Source is the etcd datastore at one cluster.
type Source struct {
	endpoints []string

	// DialTimeout bounds connecting to etcd (Load fails after it).
	DialTimeout time.Duration
	// CheckInterval is how often Watch checks the connection (DefaultCheckInterval).
	CheckInterval time.Duration
	// RetryDelay is the pause before a re-list after a failure (DefaultRetryDelay).
	RetryDelay time.Duration
	// TLS is the client TLS configuration for https endpoints; nil for plain http.
	TLS *tls.Config

	lists atomic.Int64 // full lists done by Watch (tests check that compaction forces one)

	mu      sync.Mutex
	tracker *track.Tracker
	trackOf *store.Store
}

// New returns an etcd datastore for the given client URLs (http://HOST:PORT).
func New(endpoints ...string) *Source {
	return &Source{endpoints: endpoints, DialTimeout: DefaultDialTimeout, CheckInterval: DefaultCheckInterval, RetryDelay: DefaultRetryDelay}
}

// Name implements datastore.Source.
func (s *Source) Name() string { return SourceName }

// trackerFor returns the tracker writing to st (one per store).
func (s *Source) trackerFor(st *store.Store) *track.Tracker {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tracker == nil || s.trackOf != st {
		s.tracker, s.trackOf = track.New(SourceName, st), st
	}
	return s.tracker
}

// dial connects to the cluster and checks that it answers.
func (s *Source) dial(ctx context.Context) (*clientv3.Client, error) {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   s.endpoints,
		DialTimeout: s.DialTimeout,
		TLS:         s.TLS,
		Logger:      zap.NewNop(), // failures surface as errors and in-sync marks
		Context:     ctx,
	})
	if err != nil {
		return nil, fmt.Errorf("datastore etcd:%s: %w", strings.Join(s.endpoints, ","), err)
	}
	return cli, nil
}

// Environment variables naming the client TLS files, as calico-node and calicoctl name them.
const (
	EnvCACertFile = "ETCD_CA_CERT_FILE"
	EnvCertFile   = "ETCD_CERT_FILE"
	EnvKeyFile    = "ETCD_KEY_FILE"
)

// TLSFromEnv builds the client TLS configuration from EnvCACertFile, EnvCertFile and
// EnvKeyFile (read through getenv); it returns nil when none is set.
func TLSFromEnv(getenv func(string) string) (*tls.Config, error) {
	info := transport.TLSInfo{TrustedCAFile: getenv(EnvCACertFile), CertFile: getenv(EnvCertFile), KeyFile: getenv(EnvKeyFile)}
	if info.TrustedCAFile == "" && info.CertFile == "" && info.KeyFile == "" {
		return nil, nil
	}
	if (info.CertFile == "") != (info.KeyFile == "") {
		return nil, fmt.Errorf("datastore etcd: %s and %s must be set together", EnvCertFile, EnvKeyFile)
	}
	cfg, err := info.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("datastore etcd: client TLS from %s/%s/%s: %w", EnvCACertFile, EnvCertFile, EnvKeyFile, err)
	}
	return cfg, nil
}

// where names a key in problems and model.Source.File.
func where(key string) string { return "etcd:" + key }

// Load implements datastore.Source: one consistent read of both prefixes replaces this
// source's objects in st, then the source is marked in sync. Invalid resources are returned
// as Problems and left out.
func (s *Source) Load(ctx context.Context, st *store.Store) (datastore.Problems, error) {
	tr := s.trackerFor(st)
	cli, err := s.dial(ctx)
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	if _, err := s.list(ctx, cli, tr); err != nil {
		return nil, err
	}
	if err := st.MarkInSync(SourceName); err != nil {
		return nil, err
	}
	problems, _ := tr.TakeProblems()
	return problems, nil
}

// list reads every key under both prefixes at one revision and makes the store hold exactly
// their objects. It returns that revision.
func (s *Source) list(ctx context.Context, cli *clientv3.Client, tr *track.Tracker) (int64, error) {
	resources, err := cli.Get(ctx, ResourcePrefix, clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("datastore etcd:%s: list %s: %w", strings.Join(s.endpoints, ","), ResourcePrefix, err)
	}
	rev := resources.Header.Revision
	blocks, err := cli.Get(ctx, BlockPrefix, clientv3.WithPrefix(), clientv3.WithRev(rev))
	if err != nil {
		return 0, fmt.Errorf("datastore etcd:%s: list %s: %w", strings.Join(s.endpoints, ","), BlockPrefix, err)
	}
	tr.BeginList()
	for _, kvs := range [][]*mvccpb.KeyValue{resources.Kvs, blocks.Kvs} {
		for _, kv := range kvs {
			if err := update(tr, kv); err != nil {
				return 0, err
			}
		}
	}
	if err := tr.CommitList(); err != nil {
		return 0, err
	}
	return rev, nil
}

// update applies one key's current value.
func update(tr *track.Tracker, kv *mvccpb.KeyValue) error {
	key := string(kv.Key)
	r := track.Resource{ID: key, Where: where(key), Version: strconv.FormatInt(kv.ModRevision, 10)}
	return tr.Update(r, decodeKV(key, kv.Value))
}

// Watch implements datastore.Source: it follows both prefixes from the revision of its own
// initial list until ctx ends. While etcd is unreachable the source is marked out of sync
// and the client keeps retrying; on reconnection the watch resumes where it stopped and the
// source is marked in sync once etcd confirms the watch has caught up. When the revision to
// resume from has been compacted away, it lists everything again (objects that did not
// change keep their store revision). report receives the complete list of problems whenever
// it changes. It returns nil when ctx ends, or the store's error.
func (s *Source) Watch(ctx context.Context, st *store.Store, report func(datastore.Problems)) error {
	tr := s.trackerFor(st)
	cli, err := s.dial(ctx)
	if err != nil {
		return err
	}
	defer cli.Close()
	w := &watch{src: s, cli: cli, st: st, tr: tr, report: report}
	return w.run(ctx)
}

// watch is the state of one Watch call.
type watch struct {
	src    *Source
	cli    *clientv3.Client
	st     *store.Store
	tr     *track.Tracker
	report func(datastore.Problems)

	revs   [2]int64 // per watched prefix (resources, blocks): the last revision applied
	inSync bool     // as last marked in the store by this watch
	marked bool     // whether this watch has marked the store at all
}

// run lists and watches until ctx ends, re-listing after compaction or a failed watch.
func (w *watch) run(ctx context.Context) error {
	listed := false
	for ctx.Err() == nil {
		if !listed {
			rev, err := w.src.list(ctx, w.cli, w.tr)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				if errors.Is(err, store.ErrInvalidObject) || errors.Is(err, store.ErrStale) || errors.Is(err, store.ErrUnknownKind) {
					return err
				}
				w.setInSync(false)
				if !sleep(ctx, w.src.RetryDelay) {
					return nil
				}
				continue
			}
			w.revs, listed = [2]int64{rev, rev}, true
			w.src.lists.Add(1)
			w.setInSync(true)
			w.sendProblems()
		}
		started := time.Now()
		relist, err := w.follow(ctx)
		if err != nil {
			return err
		}
		if relist {
			listed = false
			w.setInSync(false)
			// A watch that fails at once again and again must not spin on list+watch.
			if time.Since(started) < w.src.RetryDelay && !sleep(ctx, w.src.RetryDelay) {
				return nil
			}
		}
	}
	return nil
}

// follow watches each prefix from the revision after its last applied one until ctx ends
// (false), the watch can no longer resume (true: list again) or the store fails (error).
func (w *watch) follow(ctx context.Context) (bool, error) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	opts := func(rev int64) []clientv3.OpOption {
		return []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithRev(rev + 1), clientv3.WithProgressNotify()}
	}
	resources := w.cli.Watch(wctx, ResourcePrefix, opts(w.revs[0])...)
	blocks := w.cli.Watch(wctx, BlockPrefix, opts(w.revs[1])...)
	tick := time.NewTicker(w.src.CheckInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return false, nil
		case <-tick.C:
			state := w.cli.ActiveConnection().GetState()
			switch {
			case state == connectivity.TransientFailure || state == connectivity.Shutdown:
				w.setInSync(false)
			case !w.inSync:
				// Reconnected (or connecting): ask etcd to say when the watch is current.
				_ = w.cli.RequestProgress(wctx)
			}
		case resp, ok := <-resources:
			if relist, err := w.handle(0, resp, ok); relist || err != nil {
				return relist, err
			}
		case resp, ok := <-blocks:
			if relist, err := w.handle(1, resp, ok); relist || err != nil {
				return relist, err
			}
		}
	}
}

// handle applies one response of watch i (0 resources, 1 blocks). A closed channel or a
// failed watch means list again: after compaction the missed history is gone, and for other
// failures a list is the safe way back.
func (w *watch) handle(i int, resp clientv3.WatchResponse, ok bool) (bool, error) {
	if !ok || resp.Canceled {
		return true, nil
	}
	if resp.Err() != nil {
		// Compacted (the missed history is gone) or cancelled by the server: list again.
		return true, nil
	}
	for _, ev := range resp.Events {
		key := string(ev.Kv.Key)
		var err error
		if ev.Type == clientv3.EventTypeDelete {
			err = w.tr.Remove(key)
		} else {
			err = update(w.tr, ev.Kv)
		}
		if err != nil {
			return false, err
		}
	}
	// A progress notification says the watch has seen everything up to its header revision.
	switch {
	case len(resp.Events) > 0:
		w.revs[i] = max(w.revs[i], resp.Events[len(resp.Events)-1].Kv.ModRevision)
	case resp.IsProgressNotify():
		w.revs[i] = max(w.revs[i], resp.Header.Revision)
	}
	if resp.IsProgressNotify() {
		w.setInSync(true)
	}
	w.sendProblems()
	return false, nil
}

// setInSync marks the source in or out of sync in the store when that changes.
func (w *watch) setInSync(in bool) {
	if w.marked && in == w.inSync {
		return
	}
	w.inSync, w.marked = in, true
	if in {
		_ = w.st.MarkInSync(SourceName)
	} else {
		_ = w.st.MarkOutOfSync(SourceName)
	}
}

// sendProblems reports the problem list when it changed.
func (w *watch) sendProblems() {
	if p, changed := w.tr.TakeProblems(); changed && w.report != nil {
		w.report(p)
	}
}

// sleep waits d or until ctx ends; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
