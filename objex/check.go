package objex

import (
	"context"
	"fmt"
)

// CheckKey checks that the target's key file or passphrase (as the
// manager's Getenv reads it now) opens the target's key object: what a
// caller that just supplied a passphrase wants to know before relying on
// it.
func (m *Manager) CheckKey(ctx context.Context, name string) error {
	t, err := m.target(ctx, name)
	if err != nil {
		return err
	}
	var c targetConfig
	found, err := m.st.getJSON(bTargets, []byte(name), &c)
	if err != nil {
		return err
	}
	if !found {
		return fmt.Errorf("objex: no target %s", name)
	}
	src, err := m.keySource(&c)
	if err != nil {
		return err
	}
	ko, err := loadKeyObject(ctx, t.st)
	if err != nil {
		return fmt.Errorf("objex: target %s: key object: %w", name, err)
	}
	if _, _, err := unwrapKey(ko, src); err != nil {
		return fmt.Errorf("objex: target %s: %w", name, err)
	}
	return nil
}
