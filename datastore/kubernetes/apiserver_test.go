//go:build linux

package kubernetes

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"github.com/felis-dev/felis/datastore/internal/etcdtest"
)

// adminToken is the bearer token of the test cluster's admin (AlwaysAllow authorizes every
// authenticated request; anonymous requests are refused).
const adminToken = "felis-test-admin-token"

// apiServer is a kube-apiserver process on 127.0.0.1 backed by an embedded etcd.
type apiServer struct {
	t    *testing.T
	bin  string
	args []string
	log  string
	port int
	cmd  *exec.Cmd
	exit chan error
}

// kubeAPIServerBinary builds (or finds, when built before) kube-apiserver with
// tools/kube-apiserver/build.sh. It skips the test only when the build cannot fetch its
// modules (offline); any other failure fails the test.
func kubeAPIServerBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("FELIS_KUBE_APISERVER"); p != "" {
		return p
	}
	script, err := filepath.Abs("../../tools/kube-apiserver/build.sh")
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(script)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		msg := stderr.String()
		// Only a module download that cannot reach the network is a reason to skip.
		for _, offline := range []string{"dial tcp", "no such host", "network is unreachable", "i/o timeout", "connection refused", "lookup ", "lookup disabled", "GOPROXY=off"} {
			if strings.Contains(msg, offline) {
				t.Skipf("kube-apiserver cannot be built offline (run tools/kube-apiserver/build.sh once with network access, or set FELIS_KUBE_APISERVER to a kube-apiserver binary): %v\n%s", err, msg)
			}
		}
		t.Fatalf("tools/kube-apiserver/build.sh: %v\n%s", err, msg)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Logf("built kube-apiserver in %s", d.Round(time.Second))
	}
	return strings.TrimSpace(stdout.String())
}

// startAPIServer starts etcd and kube-apiserver with the flags FIELD-NOTES.md gives; both
// stop when the test ends. It returns the admin client configuration.
func startAPIServer(t *testing.T) (*apiServer, *rest.Config) {
	t.Helper()
	bin := kubeAPIServerBinary(t)
	etcd := etcdtest.Start(t)
	dir := t.TempDir()
	writeServiceAccountKeys(t, dir)
	if err := os.WriteFile(filepath.Join(dir, "tokens.csv"), []byte(adminToken+",felis-admin,felis-admin-uid,system:masters\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := &apiServer{t: t, bin: bin, log: filepath.Join(dir, "kube-apiserver.log"), port: etcdtest.FreePort(t)}
	s.args = []string{
		"--etcd-servers=" + etcd.URL(),
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + filepath.Join(dir, "sa.pub"),
		"--service-account-signing-key-file=" + filepath.Join(dir, "sa.key"),
		"--authorization-mode=AlwaysAllow",
		"--token-auth-file=" + filepath.Join(dir, "tokens.csv"),
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", s.port),
		"--cert-dir=" + filepath.Join(dir, "certs"),
		"--service-cluster-ip-range=10.96.0.0/16",
		"--endpoint-reconciler-type=none",
		"--disable-admission-plugins=ServiceAccount",
	}
	s.start()
	t.Cleanup(s.kill)
	cfg := &rest.Config{
		Host:            fmt.Sprintf("https://127.0.0.1:%d", s.port),
		BearerToken:     adminToken,
		TLSClientConfig: rest.TLSClientConfig{Insecure: true},
		QPS:             200,
		Burst:           400,
	}
	return s, cfg
}

// start runs the process and waits for /readyz.
func (s *apiServer) start() {
	s.t.Helper()
	logf, err := os.OpenFile(s.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		s.t.Fatal(err)
	}
	defer logf.Close()
	s.cmd = exec.Command(s.bin, s.args...)
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("start kube-apiserver: %v", err)
	}
	s.exit = make(chan error, 1)
	go func(c *exec.Cmd, exit chan error) { exit <- c.Wait() }(s.cmd, s.exit)
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	deadline := time.Now().Add(90 * time.Second)
	for {
		select {
		case err := <-s.exit:
			s.cmd = nil
			s.t.Fatalf("kube-apiserver exited: %v\n%s", err, s.logTail())
		default:
		}
		req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("https://127.0.0.1:%d/readyz", s.port), nil)
		req.Header.Set("Authorization", "Bearer "+adminToken)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("kube-apiserver not ready after 90s\n%s", s.logTail())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// kill stops the process at once (a crash, as far as clients can tell).
func (s *apiServer) kill() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.exit
	s.cmd = nil
}

// logTail returns the end of the server's log, for failure messages.
func (s *apiServer) logTail() string {
	b, _ := os.ReadFile(s.log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// writeServiceAccountKeys writes sa.key and sa.pub, the service-account signing key pair.
func writeServiceAccountKeys(t *testing.T, dir string) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	err = errors.Join(
		os.WriteFile(filepath.Join(dir, "sa.key"), pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600),
		os.WriteFile(filepath.Join(dir, "sa.pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o600),
	)
	if err != nil {
		t.Fatal(err)
	}
}

// ctxTimeout is a context for one API call.
func ctxTimeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}
