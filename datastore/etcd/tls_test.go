package etcd

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/felis-dev/felis/datastore"
	"github.com/felis-dev/felis/datastore/internal/etcdtest"
	"github.com/felis-dev/felis/model/store"
)

func TestLoadOverTLSFromEnvironment(t *testing.T) {
	srv := etcdtest.StartTLS(t)
	t.Setenv(EnvCACertFile, srv.CAFile)
	t.Setenv(EnvCertFile, srv.ClientCertFile)
	t.Setenv(EnvKeyFile, srv.ClientKeyFile)
	opened, err := datastore.Open("etcd:" + srv.URL())
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	src := opened.(*Source)
	cli := tlsClient(t, src)
	if _, err := cli.Put(context.Background(), keyPool, docPool); err != nil {
		t.Fatalf("put over TLS: %v", err)
	}
	st := store.New()
	if _, err := src.Load(context.Background(), st); err != nil {
		t.Fatalf("Load: %v", err)
	}
	if d := cmp.Diff([]string{"IPPool pool-a"}, keys(st.View())); d != "" {
		t.Errorf("store (-want +got):\n%s", d)
	}

	// Without the client certificate the server refuses the connection.
	plain := New(srv.URL())
	plain.DialTimeout = time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	if _, err := plain.Load(ctx, store.New()); err == nil {
		t.Error("Load without TLS succeeded")
	}
}

func TestTLSFromEnvErrors(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	if cfg, err := TLSFromEnv(env(nil)); cfg != nil || err != nil {
		t.Errorf("no variables: got %v, %v; want nil, nil", cfg, err)
	}
	if _, err := TLSFromEnv(env(map[string]string{EnvCertFile: "/x.crt"})); err == nil || !strings.Contains(err.Error(), EnvKeyFile) {
		t.Errorf("certificate without key: got %v, want an error naming %s", err, EnvKeyFile)
	}
	if _, err := TLSFromEnv(env(map[string]string{EnvCACertFile: "/nonexistent/ca.crt"})); err == nil || !strings.Contains(err.Error(), "ca.crt") {
		t.Errorf("missing CA file: got %v, want an error naming the file", err)
	}
}
