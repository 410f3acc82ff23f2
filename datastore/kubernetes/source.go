package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"net/http"

	"k8s.io/client-go/dynamic"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/felis-dev/felis/datastore"
	"github.com/felis-dev/felis/datastore/internal/track"
	"github.com/felis-dev/felis/model/store"
)

// SourceName is the name this datastore stamps into model.Source.Name.
const SourceName = "kubernetes"

func init() {
	datastore.Register("kubernetes", func(arg string) (datastore.Source, error) {
		return New(arg), nil
	})
}

// maxStartDelay caps the pause between attempts to reach the API server at Watch start.
const maxStartDelay = 30 * time.Second

// unavailableError is a failure to reach the API server or find the resources it must
// serve: Watch retries it.
type unavailableError struct{ err error }

func (e unavailableError) Error() string { return e.err.Error() }
func (e unavailableError) Unwrap() error { return e.err }

// DefaultCheckInterval is how often Watch checks whether an informer that hit a watch error
// has listed again.
const DefaultCheckInterval = time.Second

// Source is the Kubernetes datastore of one cluster.
type Source struct {
	kubeconfig string
	config     *rest.Config

	// CheckInterval is how often Watch checks failed informers (DefaultCheckInterval).
	CheckInterval time.Duration

	mu      sync.Mutex
	tracker *track.Tracker
	trackOf *store.Store
}

// New returns the datastore of the cluster a kubeconfig names: the file at kubeconfig when
// not empty, else $KUBECONFIG or ~/.kube/config, else the in-cluster service account.
func New(kubeconfig string) *Source {
	return &Source{kubeconfig: kubeconfig, CheckInterval: DefaultCheckInterval}
}

// NewForConfig returns the datastore of the cluster cfg connects to.
func NewForConfig(cfg *rest.Config) *Source {
	return &Source{config: rest.CopyConfig(cfg), CheckInterval: DefaultCheckInterval}
}

// Name implements datastore.Source.
func (s *Source) Name() string { return SourceName }

// restConfig resolves the client configuration.
func (s *Source) restConfig() (*rest.Config, error) {
	if s.config != nil {
		return rest.CopyConfig(s.config), nil
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if s.kubeconfig != "" {
		rules.ExplicitPath = s.kubeconfig
	}
	// With no kubeconfig file at all, this falls back to the in-cluster configuration.
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("datastore kubernetes: no usable kubeconfig or in-cluster configuration: %w", err)
	}
	cfg.UserAgent = "felis"
	return cfg, nil
}

// trackerFor returns the tracker writing to st (one per store).
func (s *Source) trackerFor(st *store.Store) *track.Tracker {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tracker == nil || s.trackOf != st {
		s.tracker, s.trackOf = track.New(SourceName, st), st
	}
	return s.tracker
}

// Load implements datastore.Source: it lists every resource through informers, replaces this
// source's objects in st with the valid ones in one revision, marks the source in sync and
// stops the informers. Invalid resources are returned as Problems and left out (or, when a
// valid version was loaded before, that version is kept).
func (s *Source) Load(ctx context.Context, st *store.Store) (datastore.Problems, error) {
	w, err := s.start(ctx, st)
	if err != nil {
		return nil, err
	}
	defer w.stop()
	if err := w.sync(ctx); err != nil {
		return nil, err
	}
	problems, _ := w.tr.TakeProblems()
	return problems, nil
}

// Watch implements datastore.Source: it runs the informers until ctx ends. The store is made
// to match a fresh list first (objects that did not change keep their revision); from then
// on each event is one store write: an object's model objects are upserted or deleted (a pod
// that stops qualifying for an endpoint loses it), an invalid new version is reported and the
// last valid one kept. A watch failure marks the source out of sync until the failing informer
// has listed again (client-go re-lists by itself, with backoff). report receives the complete
// list of problems whenever it changes. It returns nil when ctx ends, or the store's error.
func (s *Source) Watch(ctx context.Context, st *store.Store, report func(datastore.Problems)) error {
	s.trackerFor(st) // registers the source
	var w *watcher
	retried := false
	for delay := time.Second; ; delay = min(2*delay, maxStartDelay) {
		var err error
		w, err = s.start(ctx, st)
		if err == nil {
			break
		}
		var down unavailableError
		if !errors.As(err, &down) {
			return err
		}
		// Unreachable, or the CRDs are not there yet: keep what the store has, say why,
		// and try again.
		_ = st.MarkOutOfSync(SourceName)
		if report != nil {
			report(datastore.Problems{{Where: SourceName, Reason: err.Error() + " (retrying)"}})
		}
		retried = true
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
	defer w.stop()
	if err := w.sync(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	if p, changed := w.tr.TakeProblems(); (changed || retried) && report != nil {
		report(p)
	}
	tick := time.NewTicker(s.CheckInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-w.failed:
			return err
		case <-w.problemsChanged:
			w.report(report)
		case <-tick.C:
			w.checkRecovered()
		}
	}
}

// watcher is one run of the informers.
type watcher struct {
	st        *store.Store
	tr        *track.Tracker
	cancel    context.CancelFunc
	done      sync.WaitGroup
	informers []*informer

	failed          chan error    // the first store error
	problemsChanged chan struct{} // the problem list may have changed

	mu        sync.Mutex
	inSync    bool               // as marked in the store
	behind    map[*informer]bool // informers whose watch failed and has not restarted
	recovered bool               // an informer caught up since the last check
}

// informer is one resource's informer and its event registration.
type informer struct {
	res resource
	inf cache.SharedIndexInformer
	reg cache.ResourceEventHandlerRegistration
}

// start checks that every resource is served, then builds and runs the informers; their
// events are collected as one list until sync commits it.
func (s *Source) start(ctx context.Context, st *store.Store) (*watcher, error) {
	cfg, err := s.restConfig()
	if err != nil {
		return nil, err
	}
	ictx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	w := &watcher{
		st: st, cancel: cancel,
		failed:          make(chan error, 1),
		problemsChanged: make(chan struct{}, 1),
		behind:          map[*informer]bool{},
	}
	// Filled in below, before any informer runs; only the informers' requests look it up.
	byPath := map[string]*informer{}
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return &observer{next: rt, w: w, byPath: byPath} })
	// Built-in kinds travel as protobuf (smaller and faster to decode than JSON, which
	// matters for pods); the CRDs go through the dynamic client, which needs JSON.
	pcfg := rest.CopyConfig(cfg)
	pcfg.ContentType = "application/vnd.kubernetes.protobuf"
	pcfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	cs, err := k8s.NewForConfig(pcfg)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("datastore kubernetes: %w", err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("datastore kubernetes: %w", err)
	}
	if err := checkServed(ctx, cs); err != nil {
		cancel()
		return nil, unavailableError{err}
	}
	w.tr = s.trackerFor(st)
	w.tr.BeginList()
	for _, r := range resources {
		i := &informer{res: r, inf: r.informer(cs, dyn)}
		byPath[r.listPath()] = i
		if err := i.inf.SetTransform(slim); err != nil {
			cancel()
			return nil, fmt.Errorf("datastore kubernetes: %s: %w", r.gvr, err)
		}
		if err := i.inf.SetWatchErrorHandlerWithContext(func(ctx context.Context, r *cache.Reflector, err error) {
			cache.DefaultWatchErrorHandler(ctx, r, err)
			w.watchFailed(i, err)
		}); err != nil {
			cancel()
			return nil, fmt.Errorf("datastore kubernetes: %s: %w", r.gvr, err)
		}
		reg, err := i.inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { w.update(r, obj) },
			UpdateFunc: func(_, obj any) { w.update(r, obj) },
			DeleteFunc: func(obj any) { w.remove(r, obj) },
		})
		if err != nil {
			cancel()
			return nil, fmt.Errorf("datastore kubernetes: %s: %w", r.gvr, err)
		}
		i.reg = reg
		w.informers = append(w.informers, i)
	}
	for _, i := range w.informers {
		w.done.Add(1)
		go func() {
			defer w.done.Done()
			i.inf.RunWithContext(ictx)
		}()
	}
	return w, nil
}

// checkServed fails with a clear message when a resource felis needs is not served, since
// its informer would otherwise never sync.
func checkServed(ctx context.Context, cs k8s.Interface) error {
	byGV := map[string][]resource{}
	for _, r := range resources {
		byGV[r.apiVersion()] = append(byGV[r.apiVersion()], r)
	}
	for gv, rs := range byGV {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		list, err := cs.Discovery().ServerResourcesForGroupVersion(gv)
		if err != nil {
			if apierrors.IsNotFound(err) {
				return fmt.Errorf("datastore kubernetes: the API server does not serve %s; apply manifests/calico-crds.yaml (or run Calico's API server)", gv)
			}
			return fmt.Errorf("datastore kubernetes: discovery of %s: %w", gv, err)
		}
		served := map[string]bool{}
		for _, ar := range list.APIResources {
			served[ar.Name] = true
		}
		for _, r := range rs {
			if !served[r.gvr.Resource] {
				return fmt.Errorf("datastore kubernetes: the API server does not serve %s %s; apply manifests/calico-crds.yaml", gv, r.gvr.Resource)
			}
		}
	}
	return nil
}

// sync waits until every informer has delivered its initial list, then writes the list to
// the store in one revision and marks the source in sync.
func (w *watcher) sync(ctx context.Context) error {
	synced := make([]cache.InformerSynced, 0, len(w.informers))
	for _, i := range w.informers {
		synced = append(synced, i.reg.HasSynced)
	}
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return fmt.Errorf("datastore kubernetes: initial list: %w", context.Cause(ctx))
	}
	if err := w.tr.CommitList(); err != nil {
		return err
	}
	select {
	case err := <-w.failed:
		return err
	default:
	}
	// Every list has been delivered: failures before this point were retried by client-go.
	w.mu.Lock()
	defer w.mu.Unlock()
	clear(w.behind)
	w.inSync = true
	return w.st.MarkInSync(SourceName)
}

// stop stops the informers and waits for them.
func (w *watcher) stop() {
	w.cancel()
	w.done.Wait()
}

// identity returns the ID, resource URL and version of an object of r.
func identity(r resource, obj any) (track.Resource, bool) {
	m, err := meta.Accessor(obj)
	if err != nil {
		return track.Resource{}, false
	}
	return track.Resource{
		ID:      r.gvr.String() + " " + m.GetNamespace() + "/" + m.GetName(),
		Where:   "kubernetes:" + r.path(m.GetNamespace(), m.GetName()),
		Version: m.GetResourceVersion(),
	}, true
}

// update handles an add or update event.
func (w *watcher) update(r resource, obj any) {
	id, ok := identity(r, obj)
	if !ok {
		return
	}
	w.fail(w.tr.Update(id, r.decode(obj)))
}

// remove handles a delete event, including one client-go inferred after a re-list.
func (w *watcher) remove(r resource, obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	id, ok := identity(r, obj)
	if !ok {
		return
	}
	w.fail(w.tr.Remove(id.ID))
}

// fail records a store error for Watch to return, and signals a possible problem change.
func (w *watcher) fail(err error) {
	if err != nil {
		select {
		case w.failed <- err:
		default:
		}
	}
	select {
	case w.problemsChanged <- struct{}{}:
	default:
	}
}

// report sends the problem list when it changed.
func (w *watcher) report(report func(datastore.Problems)) {
	if p, changed := w.tr.TakeProblems(); changed && report != nil {
		report(p)
	}
}

// watchFailed marks an informer as behind after a real watch or list failure; a watch that
// merely expired or closed re-lists at once and is no outage.
func (w *watcher) watchFailed(i *informer, err error) {
	if apierrors.IsResourceExpired(err) || apierrors.IsGone(err) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.behind[i] = true
	w.markLocked()
}

// connectionFailed marks every informer as behind: the API server could not be reached, so
// every watch is broken (client-go retries them without telling the error handler).
func (w *watcher) connectionFailed() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, i := range w.informers {
		w.behind[i] = true
	}
	w.markLocked()
}

// watchStarted records that an informer's watch (re)started. client-go resumes a watch from
// the last revision it saw, or lists first, so the informer is current again.
func (w *watcher) watchStarted(i *informer) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.behind[i] {
		delete(w.behind, i)
		w.recovered = true
	}
}

// markLocked marks the source out of sync while an informer is behind.
func (w *watcher) markLocked() {
	if w.inSync && len(w.behind) > 0 {
		w.inSync = false
		_ = w.st.MarkOutOfSync(SourceName)
	}
}

// checkRecovered marks the source in sync again once no informer is behind. It runs on a
// tick, so the events a resumed watch delivers first are applied before the mark.
func (w *watcher) checkRecovered() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.recovered {
		w.recovered = false // one more tick
		return
	}
	if len(w.behind) == 0 && !w.inSync && !w.tr.Listing() {
		w.inSync = true
		_ = w.st.MarkInSync(SourceName)
	}
}

// observer wraps the client transport to see connection failures and watch starts.
type observer struct {
	next   http.RoundTripper
	w      *watcher
	byPath map[string]*informer // list path ("/api/v1/pods") -> informer
}

// RoundTrip implements http.RoundTripper.
func (o *observer) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := o.next.RoundTrip(req)
	switch {
	case err != nil:
		if req.Context().Err() == nil {
			o.w.connectionFailed()
		}
	case resp.StatusCode == http.StatusOK && req.URL.Query().Get("watch") == "true":
		if i, ok := o.byPath[req.URL.Path]; ok {
			o.w.watchStarted(i)
		}
	}
	return resp, err
}
