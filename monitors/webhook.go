package monitors

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

// A monitor's webhook is a URL a user chose that Gantry's own network
// position posts to: pointed at 127.0.0.1, 169.254.169.254 (cloud
// metadata) or a private address, it reaches services that trust whoever
// can connect. Webhooks may therefore reach public addresses only, unless
// the operator's allow list (--webhook-allow) names the address or host.
// The rule is checked when a monitor is created and again on every
// connection, on the address actually dialed, since DNS can change (or be
// made to change) between the two. Redirects are not followed: a public
// webhook could otherwise send the POST on to a private one.

// blockedNets are the non-public ranges that netip's predicates miss.
var blockedNets = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),       // "this network"
	netip.MustParsePrefix("100.64.0.0/10"),   // carrier-grade NAT
	netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments
	netip.MustParsePrefix("192.0.2.0/24"),    // documentation
	netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking
	netip.MustParsePrefix("198.51.100.0/24"), // documentation
	netip.MustParsePrefix("203.0.113.0/24"),  // documentation
	netip.MustParsePrefix("240.0.0.0/4"),     // reserved, broadcast
	netip.MustParsePrefix("64:ff9b::/96"),    // NAT64: embeds any IPv4
	netip.MustParsePrefix("64:ff9b:1::/48"),  // local-use NAT64
	netip.MustParsePrefix("2002::/16"),       // 6to4: embeds any IPv4
	netip.MustParsePrefix("2001::/32"),       // Teredo
	netip.MustParsePrefix("2001:db8::/32"),   // documentation
	netip.MustParsePrefix("fc00::/7"),        // unique local (IsPrivate has it too)
}

// publicAddr reports whether a webhook may reach ip without an allow list.
func publicAddr(ip netip.Addr) bool {
	ip = ip.Unmap()
	if !ip.IsValid() || ip.IsLoopback() || ip.IsPrivate() || ip.IsUnspecified() ||
		ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() || ip.IsInterfaceLocalMulticast() || ip.IsMulticast() {
		return false
	}
	for _, p := range blockedNets {
		if p.Contains(ip) {
			return false
		}
	}
	return true
}

// WebhookAllow is the operator's allow list of non-public webhook
// destinations: addresses, CIDR ranges and host names. A nil
// *WebhookAllow allows none.
type WebhookAllow struct {
	prefixes []netip.Prefix
	hosts    map[string]bool
}

// ParseWebhookAllow reads allow-list entries: an IP (127.0.0.1, ::1), a
// CIDR range (10.0.0.0/8) or a host name (hooks.internal), which is then
// trusted whatever it resolves to. No entries give nil.
func ParseWebhookAllow(entries []string) (*WebhookAllow, error) {
	var a WebhookAllow
	for _, e := range entries {
		e = strings.TrimSpace(e)
		switch {
		case e == "":
			continue
		case strings.Contains(e, "/"):
			p, err := netip.ParsePrefix(e)
			if err != nil {
				return nil, fmt.Errorf("webhook allow list: %q is not a CIDR range: %w", e, err)
			}
			a.prefixes = append(a.prefixes, p.Masked())
		default:
			if ip, err := netip.ParseAddr(e); err == nil {
				a.prefixes = append(a.prefixes, netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen()))
				continue
			}
			if a.hosts == nil {
				a.hosts = map[string]bool{}
			}
			a.hosts[strings.ToLower(strings.TrimSuffix(e, "."))] = true
		}
	}
	if len(a.prefixes) == 0 && len(a.hosts) == 0 {
		return nil, nil
	}
	return &a, nil
}

func (a *WebhookAllow) host(h string) bool {
	return a != nil && a.hosts[strings.ToLower(strings.TrimSuffix(h, "."))]
}

func (a *WebhookAllow) addr(ip netip.Addr) bool {
	if publicAddr(ip) {
		return true
	}
	if a == nil {
		return false
	}
	ip = ip.Unmap()
	for _, p := range a.prefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// errNotPublic is what a refused destination wraps.
var errNotPublic = errors.New("is not a public address; an operator can allow it with --webhook-allow")

// resolver resolves webhook hosts; tests replace it.
var resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
} = net.DefaultResolver

// resolve returns the addresses of host, refusing the host when any of
// them is not allowed: a name that resolves to both a public and a private
// address must not be let through by the public one.
func (a *WebhookAllow) resolve(ctx context.Context, host string) ([]netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		if !a.addr(ip) {
			return nil, fmt.Errorf("webhook address %s %w", ip, errNotPublic)
		}
		return []netip.Addr{ip}, nil
	}
	ips, err := resolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, fmt.Errorf("webhook host %s: %w", host, err)
	}
	if len(ips) == 0 {
		return nil, fmt.Errorf("webhook host %s has no address", host)
	}
	for _, ip := range ips {
		if !a.addr(ip) {
			return nil, fmt.Errorf("webhook host %s resolves to %s, which %w", host, ip, errNotPublic)
		}
	}
	return ips, nil
}

// CheckWebhook checks a webhook URL when a monitor is created: an http or
// https URL whose host is allowed and resolves to allowed addresses only.
func (a *WebhookAllow) CheckWebhook(ctx context.Context, raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
		return fmt.Errorf("alert_webhook_url %q: want an http or https URL", raw)
	}
	if u.User != nil {
		return fmt.Errorf("alert_webhook_url: user info in the URL is not allowed; put a token in its path or query instead")
	}
	if a.host(u.Hostname()) {
		return nil
	}
	if _, err := a.resolve(ctx, u.Hostname()); err != nil {
		return fmt.Errorf("alert_webhook_url: %w", err)
	}
	return nil
}

// Client returns the HTTP client an Alerter posts with: it dials only
// allowed addresses (checked on the address it connects to), uses no
// proxy, and does not follow redirects.
func (a *WebhookAllow) Client(timeout time.Duration) *http.Client {
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	tr := &http.Transport{
		Proxy: nil, // a proxy would dial for us, past the check
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			if a.host(host) {
				return dialer.DialContext(ctx, network, addr)
			}
			ips, err := a.resolve(ctx, host)
			if err != nil {
				return nil, &finalError{err: err}
			}
			var errs []error
			for _, ip := range ips {
				// Dial the checked address itself, not the name again.
				c, err := dialer.DialContext(ctx, network, net.JoinHostPort(ip.String(), port))
				if err == nil {
					return c, nil
				}
				errs = append(errs, err)
			}
			return nil, errors.Join(errs...)
		},
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: timeout,
		MaxIdleConns:          10,
		IdleConnTimeout:       90 * time.Second,
	}
	return &http.Client{
		Timeout:   timeout,
		Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}
