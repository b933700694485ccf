package k8s

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

// apiClient speaks the Kubernetes REST API over net/http: the few calls the
// dry run needs are plainer here than through client-go, and the query
// every object is sent with (dryRun=All, fieldValidation=Strict) is in
// plain sight.
type apiClient struct {
	base   string
	token  string
	hc     *http.Client
	served map[string][]apiResource // discovery, by apiVersion
}

// apiResource is an entry of a discovery document (APIResourceList).
type apiResource struct {
	Name       string `json:"name"`
	Kind       string `json:"kind"`
	Namespaced bool   `json:"namespaced"`
}

// status is the body of a refusal (kind Status).
type status struct {
	Message string `json:"message"`
	Reason  string `json:"reason"`
}

// do sends one request and returns the status code, the body and the
// server's warnings (the Warning headers' texts).
func (c *apiClient) do(ctx context.Context, method, path string, body []byte) (int, []byte, []string, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("%s %s: read body: %w", method, path, err)
	}
	var warnings []string
	for _, w := range resp.Header.Values("Warning") {
		// RFC 7234 form, as the apiserver writes it: 299 - "text", the
		// text a quoted string.
		if _, text, ok := strings.Cut(w, ` - `); ok {
			if u, err := strconv.Unquote(text); err == nil {
				w = u
			} else {
				w = strings.Trim(text, `"`)
			}
		}
		warnings = append(warnings, w)
	}
	return resp.StatusCode, b, warnings, nil
}

// refusal turns a non-2xx answer into an error that carries the server's
// message.
func refusal(code int, body []byte) error {
	var s status
	if json.Unmarshal(body, &s) == nil && s.Message != "" {
		return fmt.Errorf("%d %s: %s", code, s.Reason, s.Message)
	}
	return fmt.Errorf("%d: %s", code, bytes.TrimSpace(body))
}

// resource finds the resource of apiVersion and kind in the server's
// discovery documents, which are fetched once per apiVersion.
func (c *apiClient) resource(ctx context.Context, apiVersion, kind string) (apiResource, error) {
	list, ok := c.served[apiVersion]
	if !ok {
		var err error
		if list, err = c.discover(ctx, apiVersion); err != nil {
			return apiResource{}, err
		}
		c.served[apiVersion] = list
	}
	for _, r := range list {
		if r.Kind == kind && !strings.Contains(r.Name, "/") { // not a subresource
			return r, nil
		}
	}
	return apiResource{}, fmt.Errorf("the server has no kind %s in %s", kind, apiVersion)
}

func (c *apiClient) discover(ctx context.Context, apiVersion string) ([]apiResource, error) {
	code, body, _, err := c.do(ctx, http.MethodGet, groupPath(apiVersion), nil)
	if err != nil {
		return nil, err
	}
	if code == http.StatusNotFound {
		return nil, fmt.Errorf("the server does not serve apiVersion %s (a CRD missing from SLUICE_K8S_CRDS, or an API version this Kubernetes release no longer has)", apiVersion)
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("discovery of %s: %w", apiVersion, refusal(code, body))
	}
	var list struct {
		Resources []apiResource `json:"resources"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		return nil, fmt.Errorf("discovery of %s: %w", apiVersion, err)
	}
	return list.Resources, nil
}

// groupPath is the URL path of an apiVersion: the core group lives under
// /api, every other group under /apis.
func groupPath(apiVersion string) string {
	if !strings.Contains(apiVersion, "/") {
		return "/api/" + apiVersion
	}
	return "/apis/" + apiVersion
}

// collectionPath is the URL path objects of r are created at.
func collectionPath(apiVersion string, r apiResource, namespace string) string {
	if r.Namespaced {
		return groupPath(apiVersion) + "/namespaces/" + url.PathEscape(namespace) + "/" + r.Name
	}
	return groupPath(apiVersion) + "/" + r.Name
}

// dryRunQuery makes a create a server-side dry run that refuses unknown and
// duplicate fields instead of dropping them.
const dryRunQuery = "?dryRun=All&fieldValidation=Strict"

// dryRunCreate sends o as a create with dryRun=All. It returns the server's
// warnings, or its refusal as an error. A dry run passes through the same
// decoding, defaulting, validation and admission as a real create.
func (c *apiClient) dryRunCreate(ctx context.Context, o object, namespace string) ([]string, error) {
	r, err := c.resource(ctx, o.APIVersion, o.Kind)
	if err != nil {
		return nil, err
	}
	code, body, warnings, err := c.do(ctx, http.MethodPost, collectionPath(o.APIVersion, r, namespace)+dryRunQuery, o.JSON)
	if err != nil {
		return nil, err
	}
	if code != http.StatusCreated && code != http.StatusOK {
		return warnings, refusal(code, body)
	}
	return warnings, nil
}

// exists reports whether the named object is stored: a dry run must leave
// nothing behind.
func (c *apiClient) exists(ctx context.Context, o object, namespace string) (bool, error) {
	r, err := c.resource(ctx, o.APIVersion, o.Kind)
	if err != nil {
		return false, err
	}
	code, body, _, err := c.do(ctx, http.MethodGet, collectionPath(o.APIVersion, r, namespace)+"/"+url.PathEscape(o.Name), nil)
	switch {
	case err != nil:
		return false, err
	case code == http.StatusOK:
		return true, nil
	case code == http.StatusNotFound:
		return false, nil
	}
	return false, refusal(code, body)
}

// createNamespace creates a namespace for real; one that exists already is
// fine.
func (c *apiClient) createNamespace(ctx context.Context, name string) error {
	body, _ := json.Marshal(map[string]any{
		"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]string{"name": name},
	})
	code, resp, _, err := c.do(ctx, http.MethodPost, "/api/v1/namespaces", body)
	if err != nil {
		return err
	}
	if code != http.StatusCreated && code != http.StatusConflict {
		return fmt.Errorf("create namespace %s: %w", name, refusal(code, resp))
	}
	return nil
}

// installCRD creates a CustomResourceDefinition for real and waits until
// it is Established and its kind is in discovery, so that the dry runs of
// its objects find it.
func (c *apiClient) installCRD(tb testing.TB, crd object) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(tb.Context(), time.Minute)
	defer cancel()
	const path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
	code, body, _, err := c.do(ctx, http.MethodPost, path+"?fieldValidation=Strict", crd.JSON)
	if err != nil {
		tb.Fatalf("install CRD %s: %v", crd.Name, err)
	}
	if code != http.StatusCreated {
		tb.Fatalf("install CRD %s (%s): %v", crd.Name, crd.Source, refusal(code, body))
	}
	var spec struct {
		Spec struct {
			Group    string `json:"group"`
			Versions []struct {
				Name   string `json:"name"`
				Served bool   `json:"served"`
			} `json:"versions"`
			Names struct {
				Kind string `json:"kind"`
			} `json:"names"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(crd.JSON, &spec); err != nil {
		tb.Fatal(err)
	}
	ready := func() error {
		code, body, _, err := c.do(ctx, http.MethodGet, path+"/"+crd.Name, nil)
		if err != nil {
			return err
		}
		if code != http.StatusOK {
			return refusal(code, body)
		}
		var st struct {
			Status struct {
				Conditions []struct{ Type, Status, Message string } `json:"conditions"`
			} `json:"status"`
		}
		if err := json.Unmarshal(body, &st); err != nil {
			return err
		}
		established := false
		for _, cond := range st.Status.Conditions {
			if cond.Type == "Established" && cond.Status == "True" {
				established = true
			}
		}
		if !established {
			return fmt.Errorf("not Established: %+v", st.Status.Conditions)
		}
		for _, v := range spec.Spec.Versions {
			if !v.Served {
				continue
			}
			apiVersion := spec.Spec.Group + "/" + v.Name
			list, err := c.discover(ctx, apiVersion)
			if err != nil {
				return err
			}
			found := false
			for _, r := range list {
				found = found || r.Kind == spec.Spec.Names.Kind
			}
			if !found {
				return fmt.Errorf("%s not yet in the discovery of %s", spec.Spec.Names.Kind, apiVersion)
			}
		}
		return nil
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		err := ready()
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			tb.Fatalf("CRD %s not ready: %v", crd.Name, err)
		case <-tick.C:
		}
	}
}
