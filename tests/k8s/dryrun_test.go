package k8s

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// namespace is where the objects that name no namespace are dry-run; it
// and every namespace an object names are created for real first.
const namespace = "sluice-verify"

func TestDryRun(t *testing.T) {
	if os.Getenv("SLUICE_KUBE_APISERVER") == "" {
		t.Skip("SLUICE_KUBE_APISERVER is not set: run `make verify-k8s` at the repository root")
	}
	apiserver, err := lookBinary("SLUICE_KUBE_APISERVER", "kube-apiserver")
	if err != nil {
		t.Fatal(err)
	}
	etcd, err := lookBinary("SLUICE_ETCD", "etcd")
	if err != nil {
		t.Fatal(err)
	}
	crds, err := loadObjects(pathList("SLUICE_K8S_CRDS")...)
	if err != nil {
		t.Fatalf("SLUICE_K8S_CRDS: %v", err)
	}
	manifestPaths := pathList("SLUICE_K8S_MANIFESTS")
	if len(manifestPaths) == 0 {
		manifestPaths = []string{filepath.Join("testdata", "manifests")}
	}
	accept, err := loadObjects(manifestPaths...)
	if err != nil {
		t.Fatal(err)
	}
	if len(accept) == 0 {
		t.Fatalf("no objects in %s", strings.Join(manifestPaths, ", "))
	}
	reject, err := loadObjects(filepath.Join("testdata", "rejected"))
	if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	began := time.Now()
	api := startAPIServer(t, apiserver, dir, startEtcd(t, etcd, dir))
	t.Logf("etcd and kube-apiserver ready in %s", time.Since(began).Round(100*time.Millisecond))
	for _, crd := range crds {
		if crd.Kind != "CustomResourceDefinition" {
			t.Fatalf("SLUICE_K8S_CRDS: %s is not a CustomResourceDefinition", crd)
		}
		api.installCRD(t, crd)
	}
	for _, o := range append(accept, reject...) {
		if err := api.createNamespace(t.Context(), namespaceOf(o)); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d CRDs installed; dry-running %d objects from %s", len(crds), len(accept), strings.Join(manifestPaths, ", "))

	t.Run("accepted", func(t *testing.T) {
		for _, o := range accept {
			t.Run(o.String(), func(t *testing.T) {
				if err := api.verdict(t.Context(), o); err != nil {
					t.Fatalf("%s not accepted: %v", o, err)
				}
				if o.Name == "" { // generateName: nothing to look up
					return
				}
				stored, err := api.exists(t.Context(), o, namespaceOf(o))
				if err != nil {
					t.Fatal(err)
				}
				if stored {
					t.Errorf("%s is stored after a dry run", o)
				}
			})
		}
	})
	// The run proves something only if the server refuses what is wrong:
	// an unknown field, an invalid value, a custom resource off its CRD's
	// schema, a deprecated label.
	t.Run("rejected", func(t *testing.T) {
		for _, o := range reject {
			t.Run(o.String(), func(t *testing.T) {
				if o.Want == "" {
					t.Fatalf("%s has no `# want: <part of the refusal>` line", o)
				}
				err := api.verdict(t.Context(), o)
				if err == nil {
					t.Fatalf("%s accepted; want a refusal containing %q", o, o.Want)
				}
				if !strings.Contains(err.Error(), o.Want) {
					t.Fatalf("%s: %v; want a refusal containing %q", o, err, o.Want)
				}
			})
		}
	})
}

// verdict dry-runs o and returns nil if the server accepted it without a
// warning. A warning names a deprecated API, field or label, or a value the
// server had to correct: in a deploy file, worth fixing like an error.
func (c *apiClient) verdict(ctx context.Context, o object) error {
	warnings, err := c.dryRunCreate(ctx, o, namespaceOf(o))
	if err != nil {
		return err
	}
	if len(warnings) > 0 {
		return fmt.Errorf("accepted with warnings: %s", strings.Join(warnings, "; "))
	}
	return nil
}

func namespaceOf(o object) string {
	if o.Namespace != "" {
		return o.Namespace
	}
	return namespace
}

// pathList splits a colon-separated environment variable.
func pathList(env string) []string {
	var paths []string
	for p := range strings.SplitSeq(os.Getenv(env), ":") {
		if p != "" {
			paths = append(paths, p)
		}
	}
	return paths
}
