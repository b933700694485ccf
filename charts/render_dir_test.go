package charts

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestRenderToDir writes every values set's objects as YAML files, one
// directory per set, under $SLUICE_RENDER_DIR: make verify-k8s sends them
// to a real kube-apiserver. Without the variable it only renders.
func TestRenderToDir(t *testing.T) {
	dir := os.Getenv("SLUICE_RENDER_DIR")
	for _, set := range slices.Sorted(func(yield func(string) bool) {
		for name := range ValueSets {
			if !yield(name) {
				return
			}
		}
	}) {
		objs, err := RenderSet(set)
		if err != nil {
			t.Fatalf("%s: %v", set, err)
		}
		if dir == "" {
			continue
		}
		out := filepath.Join(dir, set)
		if err := os.MkdirAll(out, 0o755); err != nil {
			t.Fatal(err)
		}
		for i, o := range objs {
			name := fmt.Sprintf("%03d-%s-%s.yaml", i, o.Kind, o.Name)
			if err := os.WriteFile(filepath.Join(out, name), o.YAML, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}
