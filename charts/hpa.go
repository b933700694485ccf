package charts

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
)

// HPAFiles returns the generated files of hpa/ by name: the consumers'
// HorizontalPodAutoscaler and Prometheus Adapter rules as the chart renders
// them with the values set "hpa", and its KEDA ScaledObject with "keda".
// Labels that only Helm sets are left out, so the files can be applied
// with kubectl.
func HPAFiles() (map[string][]byte, error) {
	hpaObjs, err := RenderSet("hpa")
	if err != nil {
		return nil, fmt.Errorf("values set hpa: %w", err)
	}
	kedaObjs, err := RenderSet("keda")
	if err != nil {
		return nil, fmt.Errorf("values set keda: %w", err)
	}
	consumer := ReleaseName + "-consumer"
	hpa, ok := Find(hpaObjs, "HorizontalPodAutoscaler", consumer)
	if !ok {
		return nil, fmt.Errorf("values set hpa renders no HorizontalPodAutoscaler %s", consumer)
	}
	so, ok := Find(kedaObjs, "ScaledObject", consumer)
	if !ok {
		return nil, fmt.Errorf("values set keda renders no ScaledObject %s", consumer)
	}
	rules, ok := Find(hpaObjs, "ConfigMap", ReleaseName+"-prometheus-adapter")
	if !ok {
		return nil, fmt.Errorf("values set hpa renders no Prometheus Adapter rules")
	}
	var cm struct {
		Data map[string]string `json:"data"`
	}
	if err := json.Unmarshal(rules.JSON, &cm); err != nil {
		return nil, err
	}
	header := func(sets, use string) string {
		return "# Generated from charts/sluice (release " + ReleaseName + " in namespace " + Namespace +
			", values " + sets + ") by\n# go test ./charts -run TestHPAFiles -update; do not edit.\n" + use
	}
	return map[string][]byte{
		"hpa.yaml": []byte(header("charts/values/default.yaml and hpa.yaml",
			"# kubectl apply -n NAMESPACE -f hpa.yaml, after Prometheus Adapter serves\n"+
				"# prometheus-adapter-rules.yaml. Adjust the Deployment's name and the job\n"+
				"# label (the Prometheus job of the consumers) to yours.\n") +
			stripHelmLabels(string(hpa.YAML))),
		"keda-scaledobject.yaml": []byte(header("charts/values/default.yaml and keda.yaml",
			"# kubectl apply -n NAMESPACE -f keda-scaledobject.yaml, with KEDA installed.\n"+
				"# Adjust the Deployment's name, the brokers, the group, the Prometheus\n"+
				"# address and the queries' namespace and job to yours.\n") +
			stripHelmLabels(string(so.YAML))),
		"prometheus-adapter-rules.yaml": []byte(header("charts/values/default.yaml and hpa.yaml",
			"# Prometheus Adapter's configuration (its --config file; with its Helm chart,\n"+
				"# put the list under rules.external) serving the consumers' signals as\n"+
				"# external metrics.\n") +
			cm.Data["config.yaml"]),
	}, nil
}

// helmLabel matches the label lines that only a Helm release has.
var helmLabel = regexp.MustCompile(`(?m)^[ \t]*(helm\.sh/chart|app\.kubernetes\.io/managed-by): .*\n`)

func stripHelmLabels(manifest string) string {
	return strings.TrimLeft(helmLabel.ReplaceAllString(manifest, ""), "\n")
}
