package k8s

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// startTimeout bounds how long etcd and kube-apiserver may take to become
// ready; kube-apiserver needs about 5 s on a busy 2-core machine.
const startTimeout = 3 * time.Minute

// process is a child process whose output goes to a log file, shown when
// it fails.
type process struct {
	name string
	log  string
	done chan struct{}
	err  error // set before done is closed
}

// startProcess runs bin with args until the test ends. The child gets
// SIGKILL if the test process dies first (a -timeout panic, a signal), so
// no etcd or kube-apiserver outlives the run.
func startProcess(tb testing.TB, dir, name, bin string, args ...string) *process {
	tb.Helper()
	p := &process{name: name, log: filepath.Join(dir, name+".log"), done: make(chan struct{})}
	f, err := os.Create(p.log)
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		tb.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	tb.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// tail returns the end of the process's log, for a failure message.
func (p *process) tail() string {
	b, _ := os.ReadFile(p.log)
	const max = 4000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return string(b)
}

// waitReady calls ready until it returns nil, the process exits or
// startTimeout passes.
func (p *process) waitReady(tb testing.TB, ready func(context.Context) error) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(tb.Context(), startTimeout)
	defer cancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if last = ready(ctx); last == nil {
			return
		}
		select {
		case <-p.done:
			tb.Fatalf("%s exited before it was ready (%v); its log ends:\n%s", p.name, p.err, p.tail())
		case <-ctx.Done():
			tb.Fatalf("%s not ready after %s: %v; its log ends:\n%s", p.name, startTimeout, last, p.tail())
		case <-tick.C:
		}
	}
}

// freePort returns a port on 127.0.0.1 that was free a moment ago.
func freePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startEtcd starts a single-member etcd on 127.0.0.1 and returns its client
// URL once it answers /health.
func startEtcd(tb testing.TB, bin, dir string) string {
	tb.Helper()
	client := "http://127.0.0.1:" + strconv.Itoa(freePort(tb))
	peer := "http://127.0.0.1:" + strconv.Itoa(freePort(tb))
	p := startProcess(tb, dir, "etcd", bin,
		"--name=verify",
		"--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls="+client,
		"--advertise-client-urls="+client,
		"--listen-peer-urls="+peer,
		"--initial-advertise-peer-urls="+peer,
		"--initial-cluster=verify="+peer,
		"--logger=zap", "--log-outputs=stderr",
	)
	hc := &http.Client{Timeout: 5 * time.Second}
	p.waitReady(tb, func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, client+"/health", nil)
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/health: %s", resp.Status)
		}
		return nil
	})
	return client
}

// startAPIServer starts kube-apiserver on 127.0.0.1 against etcdURL and
// returns a client of it once /readyz answers ok. Authentication is a static
// token of a system:masters user and every request is authorized: the run
// checks objects, not RBAC. The ServiceAccount admission plugin is off, as
// in controller-runtime's envtest, since no controller creates the default
// service accounts.
func startAPIServer(tb testing.TB, bin, dir, etcdURL string) *apiClient {
	tb.Helper()
	pki := filepath.Join(dir, "pki")
	if err := os.MkdirAll(pki, 0o700); err != nil {
		tb.Fatal(err)
	}
	caPool, certFile, keyFile := writeServingCert(tb, pki)
	saPub, saKey := writeServiceAccountKey(tb, pki)
	token := randomHex(tb)
	tokens := filepath.Join(pki, "tokens.csv")
	if err := os.WriteFile(tokens, []byte(token+",verify-admin,verify-admin,system:masters\n"), 0o600); err != nil {
		tb.Fatal(err)
	}
	port := freePort(tb)
	p := startProcess(tb, dir, "kube-apiserver", bin,
		"--etcd-servers="+etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(port),
		"--cert-dir="+pki,
		"--tls-cert-file="+certFile,
		"--tls-private-key-file="+keyFile,
		"--token-auth-file="+tokens,
		"--authorization-mode=AlwaysAllow",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+saPub,
		"--service-account-signing-key-file="+saKey,
		// Only a setting here: nothing routes to it, there is no kube-proxy.
		"--service-cluster-ip-range=10.0.0.0/24",
		"--disable-admission-plugins=ServiceAccount",
		// Nothing else runs: no endpoints to keep, no load to prioritise.
		"--endpoint-reconciler-type=none",
		"--enable-priority-and-fairness=false",
		"--profiling=false",
	)
	c := &apiClient{
		base:  "https://127.0.0.1:" + strconv.Itoa(port),
		token: token,
		hc: &http.Client{
			Timeout:   30 * time.Second,
			Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: caPool}},
		},
		served: map[string][]apiResource{},
	}
	p.waitReady(tb, func(ctx context.Context) error {
		status, body, _, err := c.do(ctx, http.MethodGet, "/readyz", nil)
		if err != nil {
			return err
		}
		if status != http.StatusOK {
			return fmt.Errorf("/readyz: %d %s", status, bytes.TrimSpace(body))
		}
		return nil
	})
	return c
}

// writeServingCert writes a CA and a certificate for 127.0.0.1 signed by
// it, and returns the CA as a pool for the client.
func writeServingCert(tb testing.TB, dir string) (pool *x509.CertPool, certFile, keyFile string) {
	tb.Helper()
	caKey := newKey(tb)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "sluice-verify-ca"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		tb.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		tb.Fatal(err)
	}
	key := newKey(tb)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		tb.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "apiserver.crt"), filepath.Join(dir, "apiserver.key")
	writePEM(tb, certFile, "CERTIFICATE", der)
	writePEM(tb, keyFile, "EC PRIVATE KEY", marshalKey(tb, key))
	pool = x509.NewCertPool()
	pool.AddCert(ca)
	return pool, certFile, keyFile
}

// writeServiceAccountKey writes the key pair kube-apiserver signs and
// verifies service account tokens with; it refuses to start without one.
func writeServiceAccountKey(tb testing.TB, dir string) (pubFile, keyFile string) {
	tb.Helper()
	key := newKey(tb)
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		tb.Fatal(err)
	}
	pubFile, keyFile = filepath.Join(dir, "sa.pub"), filepath.Join(dir, "sa.key")
	writePEM(tb, pubFile, "PUBLIC KEY", pub)
	writePEM(tb, keyFile, "EC PRIVATE KEY", marshalKey(tb, key))
	return pubFile, keyFile
}

func newKey(tb testing.TB) *ecdsa.PrivateKey {
	tb.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

func marshalKey(tb testing.TB, k *ecdsa.PrivateKey) []byte {
	tb.Helper()
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		tb.Fatal(err)
	}
	return der
}

func writePEM(tb testing.TB, path, typ string, der []byte) {
	tb.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		tb.Fatal(err)
	}
}

func randomHex(tb testing.TB) string {
	tb.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		tb.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// lookBinary returns the binary an environment variable names, or def found
// on PATH when the variable is empty.
func lookBinary(env, def string) (string, error) {
	if p := os.Getenv(env); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%s: %w", env, err)
		}
		return p, nil
	}
	p, err := exec.LookPath(def)
	if errors.Is(err, exec.ErrNotFound) {
		return "", fmt.Errorf("%s is empty and there is no %s on PATH", env, def)
	}
	return p, err
}
