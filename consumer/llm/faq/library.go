package faq

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Config selects the FAQ files.
type Config struct {
	// File is the FAQ of every tenant without a file of its own.
	File string
	// Dir holds one file per tenant, named after the tenant id with the
	// extension .yaml, .yml or .json ("demo-shop.yaml").
	Dir string
	// Sample uses the built-in sample FAQ (see Sample) for tenants that
	// File and Dir leave without one.
	Sample bool
	// MinScore is the normalised score a match needs (DefaultMinScore when 0).
	MinScore float64
}

// Library holds the FAQ of each tenant. It is immutable and safe for
// concurrent use.
type Library struct {
	def     *Index
	tenants map[string]*Index
}

// Load reads the FAQ files cfg names. It returns an error for a file or
// directory it cannot read, a malformed file, or two files of one tenant.
// With nothing configured it returns an empty library.
func Load(cfg Config) (*Library, error) {
	lib := &Library{tenants: map[string]*Index{}}
	switch {
	case cfg.File != "":
		entries, err := ReadFile(cfg.File)
		if err != nil {
			return nil, err
		}
		if lib.def, err = NewIndex(entries, cfg.MinScore); err != nil {
			return nil, fmt.Errorf("%s: %w", cfg.File, err)
		}
	case cfg.Sample:
		ix, err := NewIndex(Sample(), cfg.MinScore)
		if err != nil {
			return nil, fmt.Errorf("sample faq: %w", err)
		}
		lib.def = ix
	}
	if cfg.Dir == "" {
		return lib, nil
	}
	des, err := os.ReadDir(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("read faq dir: %w", err)
	}
	for _, de := range des {
		ext := strings.ToLower(filepath.Ext(de.Name()))
		if de.IsDir() || (ext != ".yaml" && ext != ".yml" && ext != ".json") {
			continue
		}
		tenant := strings.TrimSuffix(de.Name(), filepath.Ext(de.Name()))
		if _, dup := lib.tenants[tenant]; dup {
			return nil, fmt.Errorf("faq dir %s: two files for tenant %q", cfg.Dir, tenant)
		}
		path := filepath.Join(cfg.Dir, de.Name())
		entries, err := ReadFile(path)
		if err != nil {
			return nil, err
		}
		ix, err := NewIndex(entries, cfg.MinScore)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		lib.tenants[tenant] = ix
	}
	return lib, nil
}

// NewLibrary returns a library of def (for every tenant, may be nil) and
// per-tenant indexes.
func NewLibrary(def *Index, tenants map[string]*Index) *Library {
	l := &Library{def: def, tenants: map[string]*Index{}}
	for t, ix := range tenants {
		l.tenants[t] = ix
	}
	return l
}

// For returns the index of tenant, or nil when it has no FAQ.
func (l *Library) For(tenant string) *Index {
	if l == nil {
		return nil
	}
	if ix, ok := l.tenants[tenant]; ok {
		return ix
	}
	return l.def
}

// Tenants returns how many tenants have a FAQ of their own and whether
// there is a default one.
func (l *Library) Tenants() (own int, hasDefault bool) {
	if l == nil {
		return 0, false
	}
	return len(l.tenants), l.def != nil
}
