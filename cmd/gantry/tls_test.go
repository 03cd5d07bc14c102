package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gantry/gantry/internal/eventually"
)

// testCA is a certificate authority the test makes, and the files of a
// server certificate it signs for 127.0.0.1.
type testCA struct {
	cert              *x509.Certificate
	key               *ecdsa.PrivateKey
	dir               string
	caFile            string
	certFile, keyFile string
	pool              *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "gantry test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &testCA{cert: cert, key: key, dir: t.TempDir(), pool: x509.NewCertPool()}
	ca.pool.AddCert(cert)
	ca.caFile = filepath.Join(ca.dir, "ca.pem")
	ca.certFile, ca.keyFile = filepath.Join(ca.dir, "server.pem"), filepath.Join(ca.dir, "server-key.pem")
	writeFile(t, ca.caFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	ca.issue(t, 100)
	return ca
}

// issue writes a server certificate for 127.0.0.1 with serial, key first
// and certificate last, each by a rename, as a renewal tool does.
func (ca *testCA) issue(t *testing.T, serial int64) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	for _, f := range []struct {
		path string
		b    *pem.Block
	}{{ca.keyFile, &pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}}, {ca.certFile, &pem.Block{Type: "CERTIFICATE", Bytes: der}}} {
		tmp := f.path + ".new"
		if err := os.WriteFile(tmp, pem.EncodeToMemory(f.b), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, f.path); err != nil {
			t.Fatal(err)
		}
	}
}

// client trusts the CA only.
func (ca *testCA) client() *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: tokenTransport{base: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.pool}}}}
}

// serial is the serial number of the certificate addr serves now, on a
// new connection.
func (ca *testCA) serial(t *testing.T, addr string) int64 {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.pool})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

// startHTTPS is startProc for a component that serves HTTPS.
func startHTTPS(t *testing.T, ca *testCA, bin, addr string, args ...string) *proc {
	t.Helper()
	p := &proc{name: args[0], cmd: exec.Command(bin, args...), log: &syncBuffer{}}
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.stop(t) })
	eventually.True(t, 15*time.Second, "gantry "+args[0]+" answers /healthz over HTTPS", func() bool {
		resp, err := ca.client().Get("https://" + addr + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return p
}

// TestTLS: gantry dev serves the API and invocations over HTTPS only with
// a certificate of the test's CA; the CLI trusts it through
// GANTRY_CA_CERT and nothing else; a renewed certificate is served to new
// connections without a restart; and the split components follow an
// HTTPS scheduler with --ca-cert.
func TestTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("runs gantry dev with a worker; run without -short")
	}
	bin := buildGantry(t)
	ca := newTestCA(t)
	addr, dataDir := freeAddr(t), t.TempDir()
	dev := startHTTPS(t, ca, bin, addr, "dev", "--listen", addr, "--data-dir", dataDir, "--tls-cert", ca.certFile, "--tls-key", ca.keyFile)
	tok := learnToken(t, addr, dataDir)
	if !strings.Contains(dev.log.String(), "https://"+addr) {
		t.Errorf("the log does not give the https URL:\n%s", dev.log)
	}

	// Plain HTTP gets no answer from the API.
	if resp, err := http.Get("http://" + addr + "/api/2.0/serving-endpoints"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Error("plain HTTP was answered 200")
		}
	}

	cli := func(env []string, args ...string) (string, error) {
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), append([]string{"GANTRY_ADDR=https://" + addr, "GANTRY_TOKEN=" + tok}, env...)...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := cli(nil, "models", "list"); err == nil || !strings.Contains(out, "certificate") {
		t.Errorf("without GANTRY_CA_CERT the CLI trusted the server: %v %s", err, out)
	}
	withCA := []string{"GANTRY_CA_CERT=" + ca.caFile}
	for _, args := range [][]string{
		{"models", "upload", "binary", filepath.Join(fixtures, "binary")},
		{"endpoints", "create", "-f", endpointFile(t, "tls-ep", "binary", "1", "Small"), "--wait"},
	} {
		if out, err := cli(withCA, args...); err != nil {
			t.Fatalf("gantry %s: %v\n%s\n%s", strings.Join(args, " "), err, out, dev.log)
		}
	}
	body, want := oneRow(t)
	resp, err := ca.client().Post("https://"+addr+"/serving-endpoints/tls-ep/invocations", "application/json", strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		b.WriteString(string(buf[:n]))
		if err != nil {
			break
		}
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("invocation over HTTPS: %d %s", resp.StatusCode, b.String())
	}
	comparePredictions(t, "over HTTPS", []any{want}, []byte(b.String()))

	// Renewal: new connections get the new certificate, no restart.
	if got := ca.serial(t, addr); got != 100 {
		t.Fatalf("serial %d, want 100", got)
	}
	ca.issue(t, 101)
	eventually.True(t, 5*time.Second, "the renewed certificate is served", func() bool { return ca.serial(t, addr) == 101 })

	// The components apart: an activator and an autoscaler follow an
	// HTTPS scheduler, trusting it through --ca-cert, and serve HTTPS.
	schedAddr, actAddr, ascAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	schedDir := t.TempDir()
	tlsFlags := []string{"--tls-cert", ca.certFile, "--tls-key", ca.keyFile}
	startHTTPS(t, ca, bin, schedAddr, append([]string{"scheduler", "--listen", schedAddr, "--data-dir", schedDir}, tlsFlags...)...)
	stok := learnToken(t, schedAddr, schedDir)
	adminTokens.Store(actAddr, stok)
	asc := startHTTPS(t, ca, bin, ascAddr, append([]string{"autoscaler", "--listen", ascAddr, "--scheduler", "https://" + schedAddr,
		"--token", stok, "--ca-cert", ca.caFile}, tlsFlags...)...)
	act := startHTTPS(t, ca, bin, actAddr, append([]string{"activator", "--listen", actAddr, "--scheduler", "https://" + schedAddr,
		"--autoscaler", "https://" + ascAddr, "--token", stok, "--ca-cert", ca.caFile}, tlsFlags...)...)
	ready := func(addr string) func() bool {
		return func() bool {
			resp, err := ca.client().Get("https://" + addr + "/readyz")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == 200
		}
	}
	eventually.True(t, 10*time.Second, "the activator has the route table and access snapshot over HTTPS", ready(actAddr))
	eventually.True(t, 10*time.Second, "the autoscaler read the scheduler over HTTPS", ready(ascAddr))
	// The activator checks tokens from the snapshot it followed.
	for auth, want := range map[string]int{"": 401, "Bearer " + stok: 404} {
		req, _ := http.NewRequest("POST", "https://"+actAddr+"/serving-endpoints/nope/invocations", strings.NewReader(`{"inputs": [1]}`))
		req.Header["Authorization"] = []string{auth}
		resp, err := ca.client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("activator, with a token %v: %d, want %d\n%s\n%s", auth != "", resp.StatusCode, want, act.log, asc.log)
		}
	}
}
