// helm-render renders a Helm chart as `helm template` does, for tests that
// run where Helm is not packaged (Debian has no helm; it has Go). It uses
// Go's text/template, the engine Helm uses, with the Sprig functions edge's
// chart calls; a function the chart uses and this file lacks is an error,
// not a silent blank.
//
//	helm-render -chart deploy/helm/edge -meta chart.json -values values.json \
//	    [-values more.json] -release edge -namespace edge > out.yaml
//
// Chart.yaml and values files are given as JSON (the test converts the YAML
// with Python); values files merge in order, the chart's own values.yaml
// first, as Helm merges -f files: maps deeply, everything else replaced.
package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/template"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func readJSON(path string) (map[string]interface{}, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out map[string]interface{}
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return out, nil
}

func merge(dst, src map[string]interface{}) map[string]interface{} {
	for k, v := range src {
		if sm, ok := v.(map[string]interface{}); ok {
			if dm, ok := dst[k].(map[string]interface{}); ok {
				dst[k] = merge(dm, sm)
				continue
			}
		}
		dst[k] = v
	}
	return dst
}

// toYAML writes JSON-like data as block YAML (what Helm's toYaml gives for
// such data: sorted keys, strings quoted when they would not read back).
func toYAML(v interface{}) string {
	var b strings.Builder
	writeYAML(&b, v, 0)
	return strings.TrimSuffix(b.String(), "\n")
}

func scalar(v interface{}) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case bool:
		return strconv.FormatBool(x)
	case float64:
		if x == float64(int64(x)) {
			return strconv.FormatInt(int64(x), 10)
		}
		return strconv.FormatFloat(x, 'g', -1, 64)
	case int:
		return strconv.Itoa(x)
	case string:
		return quoteIfNeeded(x)
	}
	return fmt.Sprint(v)
}

func quoteIfNeeded(s string) string {
	plain := s != "" && !strings.ContainsAny(s, ":#{}[],&*!|>'\"%@`\n") &&
		strings.TrimSpace(s) == s && !strings.HasPrefix(s, "-") && !strings.HasPrefix(s, "?")
	switch strings.ToLower(s) {
	case "true", "false", "yes", "no", "on", "off", "null", "~", "y", "n":
		plain = false
	}
	if _, err := strconv.ParseFloat(s, 64); err == nil {
		plain = false
	}
	if plain {
		return s
	}
	q, _ := json.Marshal(s)
	return string(q)
}

func writeYAML(b *strings.Builder, v interface{}, indent int) {
	pad := strings.Repeat(" ", indent)
	switch x := v.(type) {
	case map[string]interface{}:
		if len(x) == 0 {
			b.WriteString(pad + "{}\n")
			return
		}
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			val := x[k]
			switch vv := val.(type) {
			case map[string]interface{}:
				if len(vv) == 0 {
					b.WriteString(pad + quoteIfNeeded(k) + ": {}\n")
					continue
				}
				b.WriteString(pad + quoteIfNeeded(k) + ":\n")
				writeYAML(b, vv, indent+2)
			case []interface{}:
				if len(vv) == 0 {
					b.WriteString(pad + quoteIfNeeded(k) + ": []\n")
					continue
				}
				b.WriteString(pad + quoteIfNeeded(k) + ":\n")
				writeYAML(b, vv, indent)
			default:
				b.WriteString(pad + quoteIfNeeded(k) + ": " + scalar(val) + "\n")
			}
		}
	case []interface{}:
		if len(x) == 0 {
			b.WriteString(pad + "[]\n")
			return
		}
		for _, item := range x {
			switch iv := item.(type) {
			case map[string]interface{}, []interface{}:
				var inner strings.Builder
				writeYAML(&inner, iv, indent+2)
				text := inner.String()
				b.WriteString(pad + "- " + strings.TrimPrefix(text, pad+"  "))
			default:
				b.WriteString(pad + "- " + scalar(item) + "\n")
			}
		}
	default:
		b.WriteString(pad + scalar(v) + "\n")
	}
}

func indentText(n int, s string) string {
	pad := strings.Repeat(" ", n)
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		if l != "" {
			lines[i] = pad + l
		}
	}
	return strings.Join(lines, "\n")
}

func toInt(v interface{}) (int, error) {
	switch x := v.(type) {
	case int:
		return x, nil
	case float64:
		return int(x), nil
	case string:
		return strconv.Atoi(x)
	}
	return 0, fmt.Errorf("not a number: %v", v)
}

func empty(v interface{}) bool {
	switch x := v.(type) {
	case nil:
		return true
	case string:
		return x == ""
	case bool:
		return !x
	case float64:
		return x == 0
	case int:
		return x == 0
	case map[string]interface{}:
		return len(x) == 0
	case []interface{}:
		return len(x) == 0
	}
	return false
}

type files struct{ dir string }

// Get returns a file of the chart as text, as Helm's .Files.Get.
func (f files) Get(name string) (string, error) {
	data, err := os.ReadFile(filepath.Join(f.dir, name))
	return string(data), err
}

func main() {
	chart := flag.String("chart", "", "chart directory")
	metaFile := flag.String("meta", "", "Chart.yaml as JSON")
	release := flag.String("release", "edge", "release name")
	namespace := flag.String("namespace", "default", "namespace")
	var valueFiles listFlag
	flag.Var(&valueFiles, "values", "values JSON file (repeatable; the first is the chart's defaults)")
	flag.Parse()
	if err := run(*chart, *metaFile, *release, *namespace, valueFiles); err != nil {
		fmt.Fprintln(os.Stderr, "helm-render:", err)
		os.Exit(1)
	}
}

func run(chartDir, metaFile, release, namespace string, valueFiles []string) error {
	if chartDir == "" || metaFile == "" || len(valueFiles) == 0 {
		return errors.New("-chart, -meta and at least one -values are needed")
	}
	meta, err := readJSON(metaFile)
	if err != nil {
		return err
	}
	values := map[string]interface{}{}
	for _, f := range valueFiles {
		v, err := readJSON(f)
		if err != nil {
			return err
		}
		values = merge(values, v)
	}
	root := template.New("chart").Option("missingkey=error")
	funcs := template.FuncMap{
		"toYaml":  toYAML,
		"nindent": func(n int, s string) string { return "\n" + indentText(n, s) },
		"indent":  indentText,
		"quote": func(v interface{}) string {
			q, _ := json.Marshal(fmt.Sprint(v))
			return string(q)
		},
		"default": func(d interface{}, v ...interface{}) interface{} {
			if len(v) == 0 || empty(v[0]) {
				return d
			}
			return v[0]
		},
		"sha256sum": func(s string) string {
			sum := sha256.Sum256([]byte(s))
			return hex.EncodeToString(sum[:])
		},
		"trunc": func(n int, s string) string {
			if len(s) > n {
				return s[:n]
			}
			return s
		},
		"trimSuffix": func(suffix, s string) string { return strings.TrimSuffix(s, suffix) },
		// Sprig's signature: an int (values are float64, so charts write
		// `until (int .Values.n)`, as they must for Helm).
		"until": func(n int) []int {
			out := make([]int, 0, n)
			for i := 0; i < n; i++ {
				out = append(out, i)
			}
			return out
		},
		"int": toInt,
		"required": func(msg string, v interface{}) (interface{}, error) {
			if empty(v) {
				return nil, errors.New(msg)
			}
			return v, nil
		},
		"fail": func(msg string) (string, error) { return "", errors.New(msg) },
	}
	funcs["include"] = func(name string, data interface{}) (string, error) {
		var buf bytes.Buffer
		err := root.ExecuteTemplate(&buf, name, data)
		return buf.String(), err
	}
	root.Funcs(funcs)
	paths, err := filepath.Glob(filepath.Join(chartDir, "templates", "*"))
	if err != nil {
		return err
	}
	sort.Strings(paths)
	var manifests []string
	for _, p := range paths {
		base := filepath.Base(p)
		if base == "NOTES.txt" {
			continue
		}
		text, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if _, err := root.New(base).Parse(string(text)); err != nil {
			return err
		}
		if !strings.HasPrefix(base, "_") {
			manifests = append(manifests, base)
		}
	}
	data := map[string]interface{}{
		"Values": values,
		"Chart": map[string]interface{}{
			"Name": meta["name"], "Version": meta["version"], "AppVersion": meta["appVersion"],
		},
		"Release": map[string]interface{}{
			"Name": release, "Namespace": namespace, "Service": "Helm",
		},
		"Files": files{chartDir},
	}
	for _, name := range manifests {
		var buf bytes.Buffer
		if err := root.ExecuteTemplate(&buf, name, data); err != nil {
			return err
		}
		out := strings.TrimSpace(buf.String())
		if out == "" {
			continue
		}
		fmt.Printf("---\n# Source: %s/templates/%s\n%s\n", meta["name"], name, out)
	}
	return nil
}
