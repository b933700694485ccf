package k8s

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// object is one document of a manifest file, as JSON for the API server.
type object struct {
	Source     string // file and document number, for messages
	APIVersion string
	Kind       string
	Name       string
	Namespace  string // empty when the object does not name one
	JSON       []byte
	Want       string // testdata/rejected only: a part of the refusal
}

// String names the object as kubectl does, with where it came from.
func (o object) String() string {
	return fmt.Sprintf("%s/%s (%s)", o.Kind, o.Name, o.Source)
}

// loadObjects reads every .yaml and .yml file under each path (a file or a
// directory, walked in lexical order) and splits it into objects the way
// kubectl does. Empty documents, such as the comment-only ones Helm renders
// for a disabled template, are skipped. A duplicate key, a document without
// apiVersion, kind or a name, and a kind List are errors.
func loadObjects(paths ...string) ([]object, error) {
	var objs []object
	for _, root := range paths {
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() || !slices.Contains([]string{".yaml", ".yml"}, filepath.Ext(path)) {
				return nil
			}
			// Named from the root's last element on: short, and still
			// telling one values set's directory from another's.
			name, err := filepath.Rel(filepath.Dir(filepath.Clean(root)), path)
			if err != nil {
				name = path
			}
			f, err := os.Open(path)
			if err != nil {
				return err
			}
			defer f.Close()
			got, err := splitObjects(f, name)
			objs = append(objs, got...)
			return err
		})
		if err != nil {
			return nil, err
		}
	}
	return objs, nil
}

// splitObjects decodes each YAML document of r; name is its file, for
// messages.
func splitObjects(r io.Reader, name string) ([]object, error) {
	var objs []object
	docs := utilyaml.NewYAMLReader(bufio.NewReader(r))
	for n := 1; ; n++ {
		doc, err := docs.Read()
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return objs, fmt.Errorf("%s: document %d: %w", name, n, err)
		}
		source := fmt.Sprintf("%s#%d", name, n)
		// Strict: a key twice in one mapping is an error, not "last wins".
		js, err := yaml.YAMLToJSONStrict(doc)
		if err != nil {
			return objs, fmt.Errorf("%s: %w", source, err)
		}
		if string(bytes.TrimSpace(js)) == "null" {
			continue
		}
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name         string `json:"name"`
				GenerateName string `json:"generateName"`
				Namespace    string `json:"namespace"`
			} `json:"metadata"`
			Items json.RawMessage `json:"items"`
		}
		if err := json.Unmarshal(js, &head); err != nil {
			return objs, fmt.Errorf("%s: not an object: %w", source, err)
		}
		switch {
		case head.APIVersion == "" || head.Kind == "":
			return objs, fmt.Errorf("%s: apiVersion or kind missing", source)
		case strings.HasSuffix(head.Kind, "List") && head.Items != nil:
			return objs, fmt.Errorf("%s: kind %s: write the items as documents of their own", source, head.Kind)
		case head.Metadata.Name == "" && head.Metadata.GenerateName == "":
			return objs, fmt.Errorf("%s: %s without metadata.name", source, head.Kind)
		}
		objs = append(objs, object{
			Source:     source,
			APIVersion: head.APIVersion,
			Kind:       head.Kind,
			Name:       head.Metadata.Name,
			Namespace:  head.Metadata.Namespace,
			JSON:       js,
			Want:       wantLine(doc),
		})
	}
}

// wantLine returns the text of a "# want: ..." comment line of doc.
func wantLine(doc []byte) string {
	for line := range strings.Lines(string(doc)) {
		if want, ok := strings.CutPrefix(strings.TrimSpace(line), "# want:"); ok {
			return strings.TrimSpace(want)
		}
	}
	return ""
}

func TestSplitObjects(t *testing.T) {
	t.Run("HelmOutput", func(t *testing.T) {
		// As `helm template` writes it: a separator with a Source comment
		// before each document, a disabled template's empty document.
		const in = `---
# Source: sluice/templates/configmap.yaml
apiVersion: v1
kind: ConfigMap
metadata:
  name: a
  namespace: team
data: {k: v}
---
# Source: sluice/templates/ingress.yaml
---  # trailing comment
apiVersion: apps/v1
kind: Deployment
metadata: {name: b}
`
		objs, err := splitObjects(strings.NewReader(in), "in.yaml")
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, o := range objs {
			got = append(got, o.APIVersion+" "+o.Kind+" "+o.Namespace+"/"+o.Name+" "+o.Source)
		}
		want := []string{"v1 ConfigMap team/a in.yaml#1", "apps/v1 Deployment /b in.yaml#3"}
		if !slices.Equal(got, want) {
			t.Fatalf("got %q, want %q", got, want)
		}
		var cm map[string]any
		if err := json.Unmarshal(objs[0].JSON, &cm); err != nil || cm["data"].(map[string]any)["k"] != "v" {
			t.Fatalf("JSON of the ConfigMap = %s (%v)", objs[0].JSON, err)
		}
	})
	for _, tc := range []struct{ name, in, want string }{
		{"ErrDuplicateKey", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\nkind: Secret\n", `"kind" already set`},
		{"ErrNoKind", "apiVersion: v1\nmetadata: {name: a}\n", "apiVersion or kind missing"},
		{"ErrNoName", "apiVersion: v1\nkind: ConfigMap\n", "without metadata.name"},
		{"ErrList", "apiVersion: v1\nkind: List\nitems: []\nmetadata: {name: a}\n", "kind List"},
		{"ErrSeparator", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n--- junk\n", "invalid Yaml document separator"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := splitObjects(strings.NewReader(tc.in), "in.yaml")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
	t.Run("Want", func(t *testing.T) {
		objs, err := splitObjects(strings.NewReader("# want: spec.x: Required value\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n"), "in.yaml")
		if err != nil {
			t.Fatal(err)
		}
		if objs[0].Want != "spec.x: Required value" {
			t.Fatalf("Want = %q", objs[0].Want)
		}
	})
}
