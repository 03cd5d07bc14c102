package identity

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// BootstrapName is the display name of the admin service principal that
// Bootstrap creates, and ComponentsName that of the components' service
// principal that BootstrapComponents creates.
const (
	BootstrapName  = "gantry-admin"
	ComponentsName = "gantry-component"
)

// Bootstrap makes sure a fresh Gantry can be administered: on first start
// (no file at tokenPath) it creates the admin service principal
// gantry-admin in the admins group, makes it a token and writes the token
// to tokenPath with mode 0600, the one place the value is kept. It
// reports whether it wrote the file. With the file present it does
// nothing: the token there still works, or its owner revoked it on
// purpose. Delete the file to get a new token.
func (s *Service) Bootstrap(tokenPath string) (bool, error) {
	return s.bootstrap(tokenPath, BootstrapName, AdminsGroup)
}

// BootstrapComponents is Bootstrap for the components' service principal
// gantry-component in the gantry-components group: the token that
// activators, the autoscaler and loggers run apart send, which reads the
// route table, the access snapshot and external keys and reports load,
// but manages nothing and reads no table (see ComponentsGroup).
func (s *Service) BootstrapComponents(tokenPath string) (bool, error) {
	return s.bootstrap(tokenPath, ComponentsName, ComponentsGroup)
}

func (s *Service) bootstrap(tokenPath, name, group string) (bool, error) {
	if _, err := os.Stat(tokenPath); err == nil {
		return false, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("token file %s: %w", tokenPath, err)
	}
	var sp *Principal
	for _, p := range s.Principals(ServicePrincipal, func(p *Principal) bool { return p.DisplayName == name }) {
		sp = p
	}
	if sp == nil {
		var err error
		if sp, err = s.CreatePrincipal(ServicePrincipal, "", name); err != nil {
			return false, err
		}
	}
	g, ok := s.Lookup(Ref{Group, group})
	if !ok {
		return false, fmt.Errorf("no %s group", group)
	}
	if _, err := s.SetMembers(g.ID, []string{sp.ID}, nil, false); err != nil {
		return false, err
	}
	value, _, err := s.CreateToken(sp.ID, sp.ID, 0, "bootstrap token of "+name)
	if err != nil {
		return false, err
	}
	// Written to a temporary file that is 0600 before the value is in it,
	// then renamed, so the token is never readable by others nor half
	// written.
	tmp, err := os.CreateTemp(filepath.Dir(tokenPath), "."+filepath.Base(tokenPath)+"-*")
	if err != nil {
		return false, fmt.Errorf("write the token file %s: %w", tokenPath, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return false, fmt.Errorf("write the token file %s: %w", tokenPath, err)
	}
	if _, err := tmp.WriteString(value + "\n"); err != nil {
		tmp.Close()
		return false, fmt.Errorf("write the token file %s: %w", tokenPath, err)
	}
	if err := tmp.Close(); err != nil {
		return false, fmt.Errorf("write the token file %s: %w", tokenPath, err)
	}
	if err := os.Rename(tmp.Name(), tokenPath); err != nil {
		return false, fmt.Errorf("write the token file %s: %w", tokenPath, err)
	}
	return true, nil
}

// ReadTokenFile reads a token written by Bootstrap or BootstrapComponents (for the CLI, when
// GANTRY_TOKEN is unset).
func ReadTokenFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}
