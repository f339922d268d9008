// Command render renders a Helm chart offline, the way `helm template` does,
// with Go's text/template and sprig from Debian (no helm binary, no cluster).
// tools/check-deploy uses it to check deploy/helm/kvstore.
//
// It implements the part of Helm's engine the kvstore chart relies on:
// .Values (values.yaml coalesced with -f files, later files winning, null
// deleting a key), .Release, .Chart, .Capabilities, .Template; sprig's
// functions less env/expandenv; Helm's include, tpl, required, toYaml,
// fromYaml, fromYamlArray, toJson, fromJson, fromJsonArray and lookup (empty,
// as in `helm template`); named templates from every file (_helpers.tpl);
// NOTES.txt rendered but kept out of the manifests; the chart's kubeVersion
// constraint. As in Helm, numbers in values are float64 (Helm reads values
// through JSON), so a template that prints a number without int64 shows the
// same "1e+06" here that it would under Helm.
//
// Build (GOPATH mode, Debian packages golang-go,
// golang-github-masterminds-sprig-dev, golang-gopkg-yaml.v3-dev):
//
//	GOPATH=/usr/share/gocode GO111MODULE=off go build -o render ./deploy/helm/render
//
// Usage:
//
//	render -chart deploy/helm/kvstore [-f values.yaml]... [-name kv] [-namespace ns]
//	       [-o manifests.yaml] [-values-out values.json] [-notes-out notes.txt]
//	       [-kube-version v1.29.0] [-strict=true]
//
// Exit status 1 on any template, values or chart error, naming the file.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"text/template"

	"github.com/Masterminds/semver"
	"github.com/Masterminds/sprig"
	"gopkg.in/yaml.v3"
)

// ChartMeta holds Chart.yaml as Helm exposes it under .Chart.
type ChartMeta struct {
	APIVersion   string            `yaml:"apiVersion"`
	Name         string            `yaml:"name"`
	Version      string            `yaml:"version"`
	KubeVersion  string            `yaml:"kubeVersion"`
	Description  string            `yaml:"description"`
	Type         string            `yaml:"type"`
	Keywords     []string          `yaml:"keywords"`
	Home         string            `yaml:"home"`
	Sources      []string          `yaml:"sources"`
	Icon         string            `yaml:"icon"`
	AppVersion   string            `yaml:"appVersion"`
	Deprecated   bool              `yaml:"deprecated"`
	Annotations  map[string]string `yaml:"annotations"`
	Dependencies []interface{}     `yaml:"dependencies"`
}

// Release is .Release of an install.
type Release struct {
	Name      string
	Namespace string
	Service   string
	IsInstall bool
	IsUpgrade bool
	Revision  int
}

// KubeVersion is .Capabilities.KubeVersion.
type KubeVersion struct {
	Version    string
	Major      string
	Minor      string
	GitVersion string
}

func (k KubeVersion) String() string { return k.Version }

// APIVersions is .Capabilities.APIVersions.
type APIVersions []string

// Has says whether the (assumed) cluster serves an API version or kind.
func (a APIVersions) Has(v string) bool {
	for _, x := range a {
		if x == v {
			return true
		}
	}
	return false
}

// Capabilities is .Capabilities.
type Capabilities struct {
	KubeVersion KubeVersion
	APIVersions APIVersions
	HelmVersion map[string]string
}

// Files is .Files: the chart's files outside templates/.
type Files map[string][]byte

// Get returns a file's contents, or "" when it does not exist.
func (f Files) Get(name string) string { return string(f[name]) }

// GetBytes returns a file's contents, or nil.
func (f Files) GetBytes(name string) []byte { return f[name] }

type valueFiles []string

func (v *valueFiles) String() string     { return strings.Join(*v, ",") }
func (v *valueFiles) Set(s string) error { *v = append(*v, s); return nil }

func main() {
	chartDir := flag.String("chart", "", "chart directory (holding Chart.yaml)")
	var files valueFiles
	flag.Var(&files, "f", "values file merged over the chart's values.yaml (repeatable; later wins)")
	name := flag.String("name", "kvstore", "release name (.Release.Name)")
	namespace := flag.String("namespace", "default", "release namespace (.Release.Namespace)")
	out := flag.String("o", "-", "where to write the manifests (- = stdout)")
	valuesOut := flag.String("values-out", "", "if set, write the merged values here as JSON")
	notesOut := flag.String("notes-out", "", "if set, write the rendered NOTES.txt here")
	kubeVersion := flag.String("kube-version", "v1.29.0", "Kubernetes version assumed for .Capabilities and the chart's kubeVersion")
	strict := flag.Bool("strict", true, "fail on a reference to a missing value (missingkey=error, as helm lint --strict)")
	flag.Parse()
	if *chartDir == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: render -chart DIR [-f values.yaml]... [-name N] [-namespace NS] [-o FILE]")
		os.Exit(2)
	}
	r, err := newRenderer(*chartDir, files, *name, *namespace, *kubeVersion, *strict)
	if err != nil {
		fail(err)
	}
	if *valuesOut != "" {
		data, err := json.MarshalIndent(r.values, "", "  ")
		if err == nil {
			err = os.WriteFile(*valuesOut, append(data, '\n'), 0o644)
		}
		if err != nil {
			fail(fmt.Errorf("writing %s: %w", *valuesOut, err))
		}
	}
	manifests, notes, errs := r.render()
	if len(errs) > 0 {
		for _, e := range errs {
			fmt.Fprintf(os.Stderr, "render: %v\n", e)
		}
		os.Exit(1)
	}
	if *notesOut != "" {
		if err := os.WriteFile(*notesOut, []byte(notes), 0o644); err != nil {
			fail(err)
		}
	}
	if *out == "-" {
		_, err = os.Stdout.WriteString(manifests)
	} else {
		err = os.WriteFile(*out, []byte(manifests), 0o644)
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "render: %v\n", err)
	os.Exit(1)
}

type renderer struct {
	chart     ChartMeta
	values    map[string]interface{}
	top       map[string]interface{}
	templates map[string]string // template name (chart/templates/path) -> source
	strict    bool
}

func newRenderer(chartDir string, valueFiles []string, name, namespace, kubeVersion string, strict bool) (*renderer, error) {
	r := &renderer{templates: map[string]string{}, strict: strict}
	chartFile := filepath.Join(chartDir, "Chart.yaml")
	data, err := os.ReadFile(chartFile)
	if err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&r.chart); err != nil {
		return nil, fmt.Errorf("%s: %w", chartFile, err)
	}
	if r.chart.APIVersion != "v2" || r.chart.Name == "" || r.chart.Version == "" {
		return nil, fmt.Errorf("%s: apiVersion v2, name and version are required", chartFile)
	}
	if _, err := semver.StrictNewVersion(r.chart.Version); err != nil {
		return nil, fmt.Errorf("%s: version %q is not SemVer 2: %v", chartFile, r.chart.Version, err)
	}
	kv, err := semver.NewVersion(kubeVersion)
	if err != nil {
		return nil, fmt.Errorf("-kube-version %q: %v", kubeVersion, err)
	}
	if r.chart.KubeVersion != "" {
		c, err := semver.NewConstraint(r.chart.KubeVersion)
		if err != nil {
			return nil, fmt.Errorf("%s: kubeVersion %q: %v", chartFile, r.chart.KubeVersion, err)
		}
		if !c.Check(kv) {
			return nil, fmt.Errorf("chart requires kubeVersion %s, which is incompatible with Kubernetes %s", r.chart.KubeVersion, kubeVersion)
		}
	}

	r.values, err = readValues(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		return nil, err
	}
	for _, f := range valueFiles {
		override, err := readValues(f)
		if err != nil {
			return nil, err
		}
		coalesce(r.values, override)
	}

	files := Files{}
	templatesDir := filepath.Join(chartDir, "templates")
	err = filepath.WalkDir(chartDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(chartDir, p)
		content, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if strings.HasPrefix(p, templatesDir+string(filepath.Separator)) {
			r.templates[path.Join(r.chart.Name, filepath.ToSlash(rel))] = string(content)
		} else {
			files[filepath.ToSlash(rel)] = content
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	r.top = map[string]interface{}{
		"Values": r.values,
		"Release": Release{Name: name, Namespace: namespace, Service: "Helm", IsInstall: true,
			Revision: 1},
		"Chart": r.chart,
		"Capabilities": Capabilities{
			KubeVersion: KubeVersion{Version: "v" + kv.String(), GitVersion: "v" + kv.String(),
				Major: fmt.Sprint(kv.Major()), Minor: fmt.Sprint(kv.Minor())},
			APIVersions: APIVersions{"v1", "apps/v1", "policy/v1", "autoscaling/v2",
				"networking.k8s.io/v1", "batch/v1"},
			HelmVersion: map[string]string{"Version": "v3.14.0"},
		},
		"Files": files,
	}
	return r, nil
}

// readValues reads a values file as Helm does: YAML through JSON, so numbers
// are float64 and map keys strings.
func readValues(file string) (map[string]interface{}, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var v interface{}
	if err := yaml.Unmarshal(data, &v); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if v == nil {
		return map[string]interface{}{}, nil
	}
	m, ok := jsonish(v).(map[string]interface{})
	if !ok {
		return nil, fmt.Errorf("%s: values must be a map", file)
	}
	return m, nil
}

// jsonish converts decoded YAML to what JSON decoding gives: float64 numbers,
// string map keys.
func jsonish(v interface{}) interface{} {
	switch x := v.(type) {
	case map[string]interface{}:
		for k, e := range x {
			x[k] = jsonish(e)
		}
		return x
	case map[interface{}]interface{}:
		m := make(map[string]interface{}, len(x))
		for k, e := range x {
			m[fmt.Sprint(k)] = jsonish(e)
		}
		return m
	case []interface{}:
		for i, e := range x {
			x[i] = jsonish(e)
		}
		return x
	case int:
		return float64(x)
	case int64:
		return float64(x)
	case uint64:
		return float64(x)
	default:
		return v
	}
}

// coalesce merges src into dst as Helm merges user values over a chart's:
// maps recursively, anything else replaced, null deleting the key.
func coalesce(dst, src map[string]interface{}) {
	for k, v := range src {
		if v == nil {
			delete(dst, k)
			continue
		}
		sm, sok := v.(map[string]interface{})
		dm, dok := dst[k].(map[string]interface{})
		if sok && dok {
			coalesce(dm, sm)
		} else {
			dst[k] = v
		}
	}
}

func toYAML(v interface{}) string {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(v); err != nil {
		return ""
	}
	_ = enc.Close()
	return strings.TrimSuffix(buf.String(), "\n")
}

func fromYAML(s string) map[string]interface{} {
	var v interface{}
	if err := yaml.Unmarshal([]byte(s), &v); err != nil {
		return map[string]interface{}{"Error": err.Error()}
	}
	if v == nil {
		return map[string]interface{}{}
	}
	m, ok := jsonish(v).(map[string]interface{})
	if !ok {
		return map[string]interface{}{"Error": "not a map"}
	}
	return m
}

func fromYAMLArray(s string) []interface{} {
	var v interface{}
	if err := yaml.Unmarshal([]byte(s), &v); err != nil {
		return []interface{}{err.Error()}
	}
	if v == nil {
		return []interface{}{}
	}
	a, ok := jsonish(v).([]interface{})
	if !ok {
		return []interface{}{"not a list"}
	}
	return a
}

func (r *renderer) funcMap(root **template.Template) template.FuncMap {
	f := sprig.TxtFuncMap()
	delete(f, "env")
	delete(f, "expandenv")
	included := map[string]int{}
	f["include"] = func(name string, data interface{}) (string, error) {
		if included[name] > 1000 {
			return "", fmt.Errorf("rendering template has a nested reference name: %s", name)
		}
		included[name]++
		defer func() { included[name]-- }()
		var buf strings.Builder
		err := (*root).ExecuteTemplate(&buf, name, data)
		return buf.String(), err
	}
	f["tpl"] = func(text string, data interface{}) (string, error) {
		t, err := (*root).Clone()
		if err != nil {
			return "", err
		}
		t, err = t.New("tpl").Parse(text)
		if err != nil {
			return "", fmt.Errorf("cannot parse template %q: %w", text, err)
		}
		var buf strings.Builder
		if err := t.Execute(&buf, data); err != nil {
			return "", fmt.Errorf("error during tpl function execution for %q: %w", text, err)
		}
		return strings.ReplaceAll(buf.String(), "<no value>", ""), nil
	}
	f["required"] = func(msg string, v interface{}) (interface{}, error) {
		if v == nil {
			return v, errors.New(msg)
		}
		if s, ok := v.(string); ok && s == "" {
			return v, errors.New(msg)
		}
		return v, nil
	}
	f["toYaml"] = toYAML
	f["fromYaml"] = fromYAML
	f["fromYamlArray"] = fromYAMLArray
	f["toJson"] = func(v interface{}) string {
		data, err := json.Marshal(v)
		if err != nil {
			return ""
		}
		return string(data)
	}
	f["fromJson"] = func(s string) map[string]interface{} {
		m := map[string]interface{}{}
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			m["Error"] = err.Error()
		}
		return m
	}
	f["fromJsonArray"] = func(s string) []interface{} {
		var a []interface{}
		if err := json.Unmarshal([]byte(s), &a); err != nil {
			return []interface{}{err.Error()}
		}
		return a
	}
	f["lookup"] = func(apiVersion, kind, namespace, name string) (map[string]interface{}, error) {
		return map[string]interface{}{}, nil
	}
	return f
}

var documentSeparator = regexp.MustCompile(`(?m)^---[ \t]*(#.*)?$`)

// render executes every template that is not a partial (_*) and returns the
// manifests in `helm template`'s layout, NOTES.txt, and the errors.
func (r *renderer) render() (string, string, []error) {
	var root *template.Template
	root = template.New(r.chart.Name).Funcs(r.funcMap(&root))
	if r.strict {
		root.Option("missingkey=error")
	} else {
		root.Option("missingkey=zero")
	}
	names := make([]string, 0, len(r.templates))
	for n := range r.templates {
		names = append(names, n)
	}
	sort.Strings(names)
	var errs []error
	for _, n := range names {
		if _, err := root.New(n).Parse(r.templates[n]); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return "", "", errs
	}
	var manifests strings.Builder
	notes := ""
	for _, n := range names {
		base := path.Base(n)
		if strings.HasPrefix(base, "_") {
			continue
		}
		data := make(map[string]interface{}, len(r.top)+1)
		for k, v := range r.top {
			data[k] = v
		}
		data["Template"] = map[string]interface{}{"Name": n, "BasePath": path.Join(r.chart.Name, "templates")}
		var buf strings.Builder
		if err := root.ExecuteTemplate(&buf, n, data); err != nil {
			errs = append(errs, err)
			continue
		}
		text := strings.ReplaceAll(buf.String(), "<no value>", "")
		if base == "NOTES.txt" {
			notes = text
			continue
		}
		if !strings.HasSuffix(base, ".yaml") && !strings.HasSuffix(base, ".yml") {
			continue
		}
		for _, doc := range documentSeparator.Split(text, -1) {
			if strings.TrimSpace(doc) == "" {
				continue
			}
			fmt.Fprintf(&manifests, "---\n# Source: %s\n%s\n", n, strings.Trim(doc, "\n"))
		}
	}
	return manifests.String(), notes, errs
}
