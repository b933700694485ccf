package charts

import (
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"maps"
	"path"
	"regexp"
	"slices"
	"strings"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"sigs.k8s.io/yaml"
)

//go:embed all:sluice
var chartFiles embed.FS

//go:embed values/*.yaml
var valueFiles embed.FS

// The release the chart is rendered as.
const (
	ReleaseName = "sluice"
	Namespace   = "sluice"
)

// ValueSets names the values sets the tests render: files of values/,
// merged in order (as `helm install -f a -f b` does) over the chart's
// values.yaml.
var ValueSets = map[string][]string{
	"default":         {"default.yaml"},
	"hpa":             {"default.yaml", "hpa.yaml"},
	"keda":            {"default.yaml", "keda.yaml"},
	"off":             {"default.yaml", "off.yaml"},
	"existing-secret": {"default.yaml", "existing-secret.yaml"},
}

// Object is one rendered Kubernetes object.
type Object struct {
	// Source is the template that rendered it, e.g.
	// sluice/templates/consumer-hpa.yaml.
	Source     string
	APIVersion string
	Kind       string
	Name       string
	// Namespace is the object's, or the release's when it names none.
	Namespace string
	// Hook is its helm.sh/hook annotation: "" for an object of the release,
	// e.g. "pre-install,pre-upgrade" for one Helm runs around it.
	Hook string
	// YAML is the object as the template rendered it; JSON the same as JSON.
	YAML []byte
	JSON []byte
}

// ID names o for messages: Kind/name.
func (o Object) ID() string { return o.Kind + "/" + o.Name }

// Chart loads the embedded chart.
func Chart() (*chart.Chart, error) {
	var files []*loader.BufferedFile
	err := fs.WalkDir(chartFiles, "sluice", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := chartFiles.ReadFile(p)
		if err != nil {
			return err
		}
		files = append(files, &loader.BufferedFile{Name: strings.TrimPrefix(p, "sluice/"), Data: data})
		return nil
	})
	if err != nil {
		return nil, err
	}
	return loader.LoadFiles(files)
}

// Values returns the values of set: its files merged in order. It fails
// for a set ValueSets does not name.
func Values(set string) (map[string]any, error) {
	names, ok := ValueSets[set]
	if !ok {
		return nil, fmt.Errorf("no values set %q", set)
	}
	vals := map[string]any{}
	for _, name := range names {
		data, err := valueFiles.ReadFile(path.Join("values", name))
		if err != nil {
			return nil, err
		}
		var v map[string]any
		if err := yaml.Unmarshal(data, &v); err != nil {
			return nil, fmt.Errorf("values/%s: %w", name, err)
		}
		vals = mergeValues(vals, v)
	}
	return vals, nil
}

// mergeValues merges b over a as Helm merges values files: maps key by
// key, anything else replaced.
func mergeValues(a, b map[string]any) map[string]any {
	out := maps.Clone(a)
	for k, v := range b {
		if bm, ok := v.(map[string]any); ok {
			if am, ok := out[k].(map[string]any); ok {
				out[k] = mergeValues(am, bm)
				continue
			}
		}
		out[k] = v
	}
	return out
}

// RenderSet renders the chart with the values set named set.
func RenderSet(set string) ([]Object, error) {
	vals, err := Values(set)
	if err != nil {
		return nil, err
	}
	return Render(vals)
}

// Render renders the chart as `helm install` would with vals as the user's
// values: checked against values.schema.json, in strict mode (a template
// naming a value that does not exist fails, as with `helm lint --strict`),
// hooks included. It returns the objects in template order; the error of
// a refused value is the chart's message.
func Render(vals map[string]any) ([]Object, error) {
	ch, err := Chart()
	if err != nil {
		return nil, err
	}
	top, err := chartutil.ToRenderValues(ch, vals,
		chartutil.ReleaseOptions{Name: ReleaseName, Namespace: Namespace, Revision: 1, IsInstall: true},
		chartutil.DefaultCapabilities)
	if err != nil {
		return nil, err
	}
	out, err := engine.Engine{Strict: true}.Render(ch, top)
	if err != nil {
		return nil, err
	}
	var objs []Object
	for _, src := range slices.Sorted(maps.Keys(out)) {
		if path.Ext(src) != ".yaml" || strings.HasPrefix(path.Base(src), "_") {
			continue // NOTES.txt and partials
		}
		for i, doc := range docSeparator.Split(out[src], -1) {
			o, ok, err := parseObject(src, doc)
			if err != nil {
				return nil, fmt.Errorf("%s, document %d: %w", src, i+1, err)
			}
			if ok {
				objs = append(objs, o)
			}
		}
	}
	return objs, nil
}

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// parseObject reads one YAML document; ok is false for one without content.
func parseObject(src, doc string) (o Object, ok bool, err error) {
	js, err := yaml.YAMLToJSONStrict([]byte(doc))
	if err != nil {
		return o, false, err
	}
	if string(js) == "null" {
		return o, false, nil
	}
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name        string            `json:"name"`
			Namespace   string            `json:"namespace"`
			Annotations map[string]string `json:"annotations"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(js, &head); err != nil {
		return o, false, err
	}
	if head.APIVersion == "" || head.Kind == "" || head.Metadata.Name == "" {
		return o, false, fmt.Errorf("an object needs apiVersion, kind and metadata.name:\n%s", doc)
	}
	ns := head.Metadata.Namespace
	if ns == "" {
		ns = Namespace
	}
	return Object{
		Source: src, APIVersion: head.APIVersion, Kind: head.Kind, Name: head.Metadata.Name, Namespace: ns,
		Hook: head.Metadata.Annotations["helm.sh/hook"], YAML: []byte(strings.TrimSpace(doc) + "\n"), JSON: js,
	}, true, nil
}

// Find returns the object of kind and name among objs.
func Find(objs []Object, kind, name string) (Object, bool) {
	for _, o := range objs {
		if o.Kind == kind && o.Name == name {
			return o, true
		}
	}
	return Object{}, false
}
