// Package store keeps the scheduler's durable state, endpoints and drift
// monitor definitions, in a bbolt file.
package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/gantry/gantry/api"
	bolt "go.etcd.io/bbolt"
)

// ErrNotFound is returned by Get and Delete for a name that is not stored.
var ErrNotFound = errors.New("not found")

var (
	endpointsBucket = []byte("endpoints")
	monitorsBucket  = []byte("monitors")
)

// Endpoint is what the scheduler persists about one serving endpoint. Runtime
// state (replicas, deployment states) is not stored: it is rebuilt from the
// orchestrator after a restart.
type Endpoint struct {
	Name    string `json:"name"`
	ID      string `json:"id"`
	Creator string `json:"creator,omitempty"`
	// Created and Updated are milliseconds since the epoch.
	Created int64     `json:"created"`
	Updated int64     `json:"updated"`
	Tags    []api.Tag `json:"tags,omitempty"`

	// Config is the config that serves traffic.
	Config api.EndpointConfig `json:"config"`
	// Pending is a config rolling out; nil when none is.
	Pending      *api.EndpointConfig `json:"pending,omitempty"`
	PendingStart int64               `json:"pending_start,omitempty"`

	// UpdateState is one of the api.Config* states; UpdateMessage says why
	// the last update failed.
	UpdateState   string `json:"update_state"`
	UpdateMessage string `json:"update_message,omitempty"`
	// AIGateway is the endpoint's AI gateway config; nil until set.
	AIGateway *api.AIGateway `json:"ai_gateway,omitempty"`

	// DroppedUpdate says that UPDATE_FAILED is about a pending config that
	// was dropped, not about Config (which serves as before), so the state
	// stays until the next update.
	DroppedUpdate bool `json:"dropped_update,omitempty"`
}

// Store is a bbolt-backed endpoint store. It is safe for concurrent use.
type Store struct {
	db *bolt.DB
}

// Open opens or creates the store file at path.
func Open(path string) (*Store, error) {
	// The timeout turns "another gantry holds this data dir" into an error
	// instead of a hang.
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{endpointsBucket, monitorsBucket} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("init store %s: %w", path, err)
	}
	return &Store{db: db}, nil
}

// Close closes the file.
func (s *Store) Close() error { return s.db.Close() }

// Put writes an endpoint, replacing any with the same name.
func (s *Store) Put(e *Endpoint) error {
	b, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode endpoint %s: %w", e.Name, err)
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(endpointsBucket).Put([]byte(e.Name), b)
	})
}

// Get reads one endpoint.
func (s *Store) Get(name string) (*Endpoint, error) {
	var e *Endpoint
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(endpointsBucket).Get([]byte(name))
		if b == nil {
			return ErrNotFound
		}
		e = new(Endpoint)
		return json.Unmarshal(b, e)
	})
	if err != nil {
		return nil, fmt.Errorf("get endpoint %s: %w", name, err)
	}
	return e, nil
}

// List reads every endpoint, sorted by name.
func (s *Store) List() ([]*Endpoint, error) {
	var out []*Endpoint
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(endpointsBucket).ForEach(func(k, v []byte) error {
			e := new(Endpoint)
			if err := json.Unmarshal(v, e); err != nil {
				return fmt.Errorf("decode endpoint %s: %w", k, err)
			}
			out = append(out, e)
			return nil
		})
	})
	return out, err
}

// Delete removes an endpoint.
func (s *Store) Delete(name string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(endpointsBucket)
		if b.Get([]byte(name)) == nil {
			return ErrNotFound
		}
		return b.Delete([]byte(name))
	})
}

// PutMonitor writes a drift monitor's definition, replacing any with the
// same name.
func (s *Store) PutMonitor(m *api.Monitor) error {
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode monitor %s: %w", m.Name, err)
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(monitorsBucket).Put([]byte(m.Name), b)
	})
}

// GetMonitor reads one monitor definition.
func (s *Store) GetMonitor(name string) (*api.Monitor, error) {
	var m *api.Monitor
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(monitorsBucket).Get([]byte(name))
		if b == nil {
			return ErrNotFound
		}
		m = new(api.Monitor)
		return json.Unmarshal(b, m)
	})
	if err != nil {
		return nil, fmt.Errorf("get monitor %s: %w", name, err)
	}
	return m, nil
}

// ListMonitors reads every monitor definition, sorted by name.
func (s *Store) ListMonitors() ([]*api.Monitor, error) {
	var out []*api.Monitor
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(monitorsBucket).ForEach(func(k, v []byte) error {
			m := new(api.Monitor)
			if err := json.Unmarshal(v, m); err != nil {
				return fmt.Errorf("decode monitor %s: %w", k, err)
			}
			out = append(out, m)
			return nil
		})
	})
	return out, err
}

// DeleteMonitor removes a monitor definition.
func (s *Store) DeleteMonitor(name string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(monitorsBucket)
		if b.Get([]byte(name)) == nil {
			return ErrNotFound
		}
		return b.Delete([]byte(name))
	})
}
