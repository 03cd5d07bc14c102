package api

import "net/url"

// UsageOptions choose what Usage sums; zero values take the server's
// defaults (since 7d, by endpoint).
type UsageOptions struct {
	// Since is how far back: a count of d, h or m ("7d", "24h", "30m").
	Since string
	// By is endpoint, entity or requester.
	By string
}

// Usage is GET /api/2.0/gantry/usage (admins only).
func (c *Client) Usage(o UsageOptions, q *QueryOptions) (*UsageResponse, *QueryMeta, error) {
	v := url.Values{}
	if o.Since != "" {
		v.Set("since", o.Since)
	}
	if o.By != "" {
		v.Set("by", o.By)
	}
	path := "/api/2.0/gantry/usage"
	if len(v) > 0 {
		path += "?" + v.Encode()
	}
	var out UsageResponse
	meta, err := c.query(path, q, &out)
	if err != nil {
		return nil, nil, err
	}
	return &out, meta, nil
}
