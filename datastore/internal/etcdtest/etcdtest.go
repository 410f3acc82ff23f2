package etcdtest

import (
	"fmt"
	"net"
	"net/url"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Server is one embedded etcd member, restartable on its data directory.
type Server struct {
	t    testing.TB
	Dir  string // data directory
	Port int    // client port
	peer int    // peer port
	etcd *embed.Etcd

	// With TLS (StartTLS): the CA that signed the server and client certificates, and the
	// client's certificate and key files. Clients must present the certificate.
	CAFile, ClientCertFile, ClientKeyFile string
	serverTLS                             *transport.TLSInfo
}

// FreePort returns a TCP port of 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Start starts a new single-member cluster in a fresh temporary directory; it is stopped
// when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{t: t, Dir: t.TempDir(), Port: FreePort(t), peer: FreePort(t)}
	s.StartOn(s.Port)
	t.Cleanup(s.Stop)
	return s
}

// StartTLS is Start with client TLS and client certificate authentication.
func StartTLS(t testing.TB) *Server {
	t.Helper()
	s := &Server{t: t, Dir: t.TempDir(), Port: FreePort(t), peer: FreePort(t)}
	certs := t.TempDir()
	s.CAFile, s.ClientCertFile, s.ClientKeyFile, s.serverTLS = writeCerts(t, certs)
	s.StartOn(s.Port)
	t.Cleanup(s.Stop)
	return s
}

// URL is the client URL of the current client port.
func (s *Server) URL() string {
	if s.serverTLS != nil {
		return fmt.Sprintf("https://127.0.0.1:%d", s.Port)
	}
	return fmt.Sprintf("http://127.0.0.1:%d", s.Port)
}

// StartOn (re)starts the member on its data directory with the given client port.
func (s *Server) StartOn(port int) {
	s.t.Helper()
	s.Port = port
	cfg := embed.NewConfig()
	cfg.Name = "felis-test"
	cfg.Dir = s.Dir
	client := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", port)}
	if s.serverTLS != nil {
		client.Scheme = "https"
		cfg.ClientTLSInfo = *s.serverTLS
	}
	peer := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", s.peer)}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	// Short raft timings: a single member elects itself sooner, and Close's wait for open
	// client streams (5s plus two election timeouts) is as short as it gets.
	cfg.TickMs, cfg.ElectionMs = 10, 100
	cfg.Logger = "zap"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	var err error
	// The ports were free when chosen; a restart may find one briefly in TIME_WAIT.
	for attempt := 0; ; attempt++ {
		s.etcd, err = embed.StartEtcd(cfg)
		if err == nil || attempt == 20 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		s.t.Fatalf("start etcd on %s: %v", client.Host, err)
	}
	select {
	case <-s.etcd.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		s.etcd.Close()
		s.t.Fatalf("etcd on %s not ready after 30s", client.Host)
	}
}

// Stop stops the member (a no-op when stopped); its data stays for StartOn.
func (s *Server) Stop() {
	if s.etcd != nil {
		s.etcd.Close()
		s.etcd = nil
	}
}
