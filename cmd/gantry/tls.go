package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/spf13/cobra"
)

// tlsOptions are the flags of a component's listener: with --tls-cert and
// --tls-key it serves HTTPS only.
type tlsOptions struct {
	cert, key string
}

func (o *tlsOptions) flags(c *cobra.Command) {
	c.Flags().StringVar(&o.cert, "tls-cert", "", "PEM certificate (chain) to serve HTTPS with; a renewed file is picked up without a restart (with --tls-key)")
	c.Flags().StringVar(&o.key, "tls-key", "", "PEM private key of --tls-cert")
}

// scheme is the URL scheme the listener serves.
func (o *tlsOptions) scheme() string {
	if o.cert != "" {
		return "https"
	}
	return "http"
}

// wrap makes ln serve TLS with the certificate files, or returns it as it
// is without them. The files are read now, so that a bad pair stops the
// start, and again when they change (see certReloader). On an error ln
// is left open: it is the caller's.
func (o *tlsOptions) wrap(ln net.Listener, log *slog.Logger) (net.Listener, error) {
	if o.cert == "" && o.key == "" {
		return ln, nil
	}
	if o.cert == "" || o.key == "" {
		return nil, errors.New("--tls-cert and --tls-key go together")
	}
	r := &certReloader{certFile: o.cert, keyFile: o.key, log: log, now: time.Now}
	if _, err := r.load(); err != nil {
		return nil, err
	}
	return tls.NewListener(ln, &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: r.get}), nil
}

// certReloadEvery is how often, at most, a handshake looks at the
// certificate files' modification times.
const certReloadEvery = time.Second

// certReloader serves the certificate in certFile and keyFile, reading
// them again when either file's modification time changes, so that a
// renewed certificate (cert-manager, certbot, Vault) takes effect on new
// connections without a restart. A renewed pair that does not load (a
// key written after its certificate, say) keeps the old one and is tried
// again at the next check.
type certReloader struct {
	certFile, keyFile string
	log               *slog.Logger
	now               func() time.Time

	mu      sync.Mutex // guards cur, stamp and checked
	cur     *tls.Certificate
	stamp   [2]time.Time // the files' modification times when cur was read
	checked time.Time
}

func (r *certReloader) stamps() ([2]time.Time, error) {
	var st [2]time.Time
	for i, f := range []string{r.certFile, r.keyFile} {
		info, err := os.Stat(f)
		if err != nil {
			return st, err
		}
		st[i] = info.ModTime()
	}
	return st, nil
}

// load reads the pair. r.mu must be held, or r not yet shared.
func (r *certReloader) load() (*tls.Certificate, error) {
	st, err := r.stamps()
	if err != nil {
		return nil, fmt.Errorf("TLS certificate: %w", err)
	}
	c, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate %s and key %s: %w", r.certFile, r.keyFile, err)
	}
	r.cur, r.stamp, r.checked = &c, st, r.now()
	return &c, nil
}

func (r *certReloader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now := r.now(); now.Sub(r.checked) >= certReloadEvery {
		r.checked = now
		if st, err := r.stamps(); err == nil && st != r.stamp {
			if _, err := r.load(); err != nil {
				r.log.Warn("the renewed TLS certificate does not load; serving the previous one", "err", err)
			} else {
				r.log.Info("TLS certificate reloaded", "cert", r.certFile)
			}
		}
	}
	return r.cur, nil
}

// caClient is the HTTP client of a component that calls another over
// HTTPS signed by the authorities in caFile (--ca-cert); nil without one
// (the default client, the system's roots).
func caClient(caFile string) (*http.Client, error) {
	if caFile == "" {
		return nil, nil
	}
	return api.HTTPClientWithCA(caFile)
}

// caFlag adds --ca-cert (GANTRY_CA_CERT, which api.DefaultConfig reads
// too) to a component that calls others.
func caFlag(c *cobra.Command, v *string) {
	c.Flags().StringVar(v, "ca-cert", "", "PEM file of the certificate authorities that the HTTPS components this one calls are signed by (default: the system's)")
}
