package main

// The agent's configuration layering. Highest first:
//
//  1. a command-line flag given explicitly;
//  2. the environment: FELIS_ + the key in upper case (FELIS_HEALTHADDR, FELIS_VXLANPORT);
//  3. the config file (--config FILE or FELIS_CONFIG): YAML, a map with the same keys
//     (case-insensitive);
//  4. FelixConfiguration node.NODE, then FelixConfiguration default (dataplane keys only);
//  5. the built-in default (the flag default, or Felix's default for dataplane keys).
//
// Process keys (datastore, nodeName, the listen addresses, intervals) are read once at
// start. Dataplane keys (the FelixConfiguration fields felis uses) reach derive as
// derive.Options.ConfigOverrides, laid over the FelixConfigurations of every cycle, so
// FelixConfiguration edits apply without a restart while env and file values keep winning;
// the agent also re-reads the config file and applies changed dataplane keys live.

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"
	"sigs.k8s.io/yaml"

	"github.com/felis-dev/felis/derive"
	"github.com/felis-dev/felis/model"
	"github.com/felis-dev/felis/model/store"
	"github.com/felis-dev/felis/snapshot"
)

// envPrefix starts every environment variable the agent reads.
const envPrefix = "FELIS_"

// processKeys maps the config keys of process settings to their agent flags.
var processKeys = []struct{ key, flag string }{
	{"datastore", "datastore"},
	{"nodeName", "node"},
	{"dataplane", "dataplane"},
	{"noRouting", "no-routing"},
	{"healthAddr", "health-addr"},
	{"metricsAddr", "metrics-addr"},
	{"livenessTimeout", "liveness-timeout"},
	{"resyncInterval", "resync-interval"},
	{"coalesce", "coalesce"},
	{"logLevel", "log-level"},
	{"logRepeatInterval", "log-repeat-interval"},
}

// dataplaneKeys are the FelixConfiguration fields felis uses (derive/config.go), in the order
// --print-config shows them.
var dataplaneKeys = []string{
	"interfacePrefix", "failsafeInboundHostPorts", "failsafeOutboundHostPorts",
	"defaultEndpointToHostAction", "vxlanEnabled", "vxlanVNI", "vxlanPort", "vxlanMTU",
	"vxlanMTUV6", "deviceRouteProtocol", "maxIpsetSize", "chainInsertMode", "logPrefix",
}

// agentConfig is the resolved configuration outside the datastore.
type agentConfig struct {
	file      string            // the config file read, "" if none
	env       map[string]string // dataplane key -> raw environment value
	fileSpec  map[string]any    // dataplane key -> config file value
	processes map[string]string // process key -> where its value came from
	overrides []derive.ConfigOverride
}

// canonicalKey returns the key spelled as in processKeys/dataplaneKeys, matching any case.
func canonicalKey(k string) (string, bool) {
	for _, p := range processKeys {
		if strings.EqualFold(p.key, k) {
			return p.key, true
		}
	}
	for _, d := range dataplaneKeys {
		if strings.EqualFold(d, k) {
			return d, true
		}
	}
	if strings.EqualFold(k, "config") {
		return "config", true
	}
	return "", false
}

// resolveAgentConfig layers the environment (getenv) and the config file over the flags
// that were not given explicitly, and returns the dataplane overrides for derive.
func resolveAgentConfig(fl *pflag.FlagSet, configFile string, getenv func(string) string) (*agentConfig, error) {
	c := &agentConfig{env: map[string]string{}, fileSpec: map[string]any{}, processes: map[string]string{}}
	if configFile == "" {
		configFile = getenv(envPrefix + "CONFIG")
	}
	fileVals := map[string]any{}
	if configFile != "" {
		var err error
		if fileVals, err = readConfigFile(configFile); err != nil {
			return nil, err
		}
		c.file = configFile
	}
	for _, p := range processKeys {
		f := fl.Lookup(p.flag)
		if f == nil {
			continue
		}
		env := envPrefix + strings.ToUpper(p.key)
		switch fv, inFile := fileVals[p.key]; {
		case f.Changed:
			c.processes[p.key] = "flag --" + p.flag
		case getenv(env) != "":
			if err := fl.Set(p.flag, getenv(env)); err != nil {
				return nil, fmt.Errorf("environment %s: %w", env, err)
			}
			c.processes[p.key] = "environment " + env
		case inFile && fv != nil:
			if err := fl.Set(p.flag, fmt.Sprint(fv)); err != nil {
				return nil, fmt.Errorf("config file %s: %s: %w", configFile, p.key, err)
			}
			c.processes[p.key] = "config file " + configFile
		default:
			c.processes[p.key] = "default"
		}
	}
	for _, k := range dataplaneKeys {
		if s := getenv(envPrefix + strings.ToUpper(k)); s != "" {
			c.env[k] = s
		}
	}
	c.fileSpec = dataplaneSpec(fileVals)
	c.overrides = c.overridesWith(c.fileSpec)
	return c, nil
}

// readConfigFile reads a config file into canonical key -> value.
func readConfigFile(path string) (map[string]any, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--config: %w", err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	vals := map[string]any{}
	for k, v := range doc {
		ck, ok := canonicalKey(k)
		if !ok || ck == "config" {
			return nil, fmt.Errorf("config file %s: unknown key %q (known: %s)", path, k, strings.Join(knownKeys(), ", "))
		}
		vals[ck] = v
	}
	return vals, nil
}

// dataplaneSpec keeps the dataplane keys that are set.
func dataplaneSpec(vals map[string]any) map[string]any {
	spec := map[string]any{}
	for _, k := range dataplaneKeys {
		if v, ok := vals[k]; ok && v != nil && v != "" {
			spec[k] = v
		}
	}
	return spec
}

// overridesWith returns the derive overrides for a config file spec and the environment.
func (c *agentConfig) overridesWith(fileSpec map[string]any) []derive.ConfigOverride {
	var out []derive.ConfigOverride
	if len(fileSpec) > 0 {
		out = append(out, derive.ConfigOverride{Name: "config file " + c.file, Spec: fileSpec})
	}
	if len(c.env) > 0 {
		envSpec := map[string]any{}
		for k, s := range c.env {
			envSpec[k] = envValue(k, s)
		}
		out = append(out, derive.ConfigOverride{Name: "environment", Spec: envSpec})
	}
	return out
}

// watchConfigFile re-reads the config file every interval until ctx ends and, when its
// dataplane keys change, sends the new overrides to apply (without a restart). Process keys
// are read once at start: a change to one is logged as needing a restart. A file that does
// not read or parse is logged and ignored; the last good values stay in force.
func (c *agentConfig) watchConfigFile(ctx context.Context, interval time.Duration, log *slog.Logger, apply chan<- []derive.ConfigOverride) {
	if c.file == "" {
		return
	}
	start, err := readConfigFile(c.file)
	if err != nil {
		start = map[string]any{}
	}
	lastSpec := c.fileSpec
	lastErr := ""
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		vals, err := readConfigFile(c.file)
		if err != nil {
			if err.Error() != lastErr {
				log.Error("config file unreadable; keeping its last good values", "err", err)
			}
			lastErr = err.Error()
			continue
		}
		lastErr = ""
		for _, p := range processKeys {
			if fmt.Sprint(vals[p.key]) != fmt.Sprint(start[p.key]) && strings.HasPrefix(c.processes[p.key], "config file") {
				log.Warn("config file changed a setting that needs a restart", "key", p.key, "value", vals[p.key])
			}
		}
		start = vals
		spec := dataplaneSpec(vals)
		if reflect.DeepEqual(spec, lastSpec) {
			continue
		}
		lastSpec = spec
		log.Info("config file changed; applying its dataplane settings", "file", c.file)
		select {
		case apply <- c.overridesWith(spec):
		case <-ctx.Done():
			return
		}
	}
}

func knownKeys() []string {
	var out []string
	for _, p := range processKeys {
		out = append(out, p.key)
	}
	return append(out, dataplaneKeys...)
}

// envValue converts an environment string into the value form a FelixConfiguration spec
// holds (numbers, booleans, failsafe port lists), so derive validates both alike. A value
// that does not convert is passed on as the string, and derive rejects it by name.
func envValue(key, s string) any {
	switch key {
	case "vxlanEnabled":
		if b, err := strconv.ParseBool(s); err == nil {
			return b
		}
	case "vxlanVNI", "vxlanPort", "vxlanMTU", "vxlanMTUV6", "deviceRouteProtocol", "maxIpsetSize":
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			return n
		}
	case "failsafeInboundHostPorts", "failsafeOutboundHostPorts":
		if ports, ok := parseFailsafeEnv(s); ok {
			return ports
		}
	}
	return s
}

// parseFailsafeEnv parses Felix's environment form of a failsafe list:
// "tcp:22,udp:68,tcp:10.0.0.0/8:179" (protocol:[net:]port), or "none" for an empty list.
func parseFailsafeEnv(s string) ([]any, bool) {
	out := []any{}
	if strings.EqualFold(strings.TrimSpace(s), "none") {
		return out, true
	}
	for e := range strings.SplitSeq(s, ",") {
		e = strings.TrimSpace(e)
		proto, rest, ok := strings.Cut(e, ":")
		if !ok {
			return nil, false
		}
		entry := map[string]any{"protocol": proto}
		i := strings.LastIndexByte(rest, ':')
		portText := rest
		if i >= 0 {
			entry["net"], portText = rest[:i], rest[i+1:]
		}
		port, err := strconv.Atoi(portText)
		if err != nil {
			return nil, false
		}
		entry["port"] = port
		out = append(out, entry)
	}
	return out, true
}

// configRow is one line of --print-config.
type configRow struct{ Key, Value, Source string }

// printConfigRows returns the effective value and origin of every key: process keys from
// the flags, dataplane keys from the derived configuration of node in view v.
func (c *agentConfig) rows(fl *pflag.FlagSet, v *store.View, node string) []configRow {
	var out []configRow
	for _, p := range processKeys {
		if f := fl.Lookup(p.flag); f != nil {
			out = append(out, configRow{p.key, f.Value.String(), c.processes[p.key]})
		}
	}
	cfg, _ := derive.ResolveConfigOptions(v, node, derive.Options{ConfigOverrides: c.overrides})
	values := configValues(cfg)
	// The layers, highest first, with the spec each holds.
	type layer struct {
		name string
		spec map[string]any
	}
	envSpec := map[string]any{}
	for k, s := range c.env {
		envSpec[k] = envValue(k, s)
	}
	layers := []layer{{"environment " + envPrefix, envSpec}, {"config file " + c.file, c.fileSpec}}
	for _, name := range []string{"node." + node, "default"} {
		if fc, ok := store.Get[*model.FelixConfiguration](v, model.Key{Kind: model.KindFelixConfiguration, Name: name}); ok {
			layers = append(layers, layer{"FelixConfiguration " + name, fc.Spec})
		}
	}
	empty := store.New().View()
	for _, k := range dataplaneKeys {
		src := "built-in"
		if k == "vxlanEnabled" {
			src = "IP pools"
		}
		for _, l := range layers {
			val, ok := l.spec[k]
			if !ok || val == nil || val == "" {
				continue
			}
			// A value that does not validate is skipped: the layer below decides.
			if _, errs := derive.ResolveConfigOptions(empty, node, derive.Options{ConfigOverrides: []derive.ConfigOverride{{Name: l.name, Spec: map[string]any{k: val}}}}); len(errs) > 0 {
				continue
			}
			src = l.name
			if strings.HasPrefix(src, "environment ") {
				src += strings.ToUpper(k)
			}
			break
		}
		out = append(out, configRow{k, values[k], src})
	}
	return out
}

// configValues spells the dataplane keys' effective values the way the environment takes them.
func configValues(c snapshot.Config) map[string]string {
	action := map[snapshot.Action]string{snapshot.Deny: "Drop", snapshot.Allow: "Accept", snapshot.Return: "Return"}
	return map[string]string{
		"interfacePrefix":             strings.Join(c.InterfacePrefixes, ","),
		"failsafeInboundHostPorts":    formatFailsafe(c.FailsafeInbound),
		"failsafeOutboundHostPorts":   formatFailsafe(c.FailsafeOutbound),
		"defaultEndpointToHostAction": action[c.DefaultEndpointToHostAction],
		"vxlanEnabled":                strconv.FormatBool(c.VXLANEnabled),
		"vxlanVNI":                    strconv.Itoa(c.VXLANVNI),
		"vxlanPort":                   strconv.Itoa(c.VXLANPort),
		"vxlanMTU":                    strconv.Itoa(c.VXLANMTU),
		"vxlanMTUV6":                  strconv.Itoa(c.VXLANMTUV6),
		"deviceRouteProtocol":         strconv.Itoa(c.RouteProtocol),
		"maxIpsetSize":                strconv.Itoa(c.IPSetsMaxSize),
		"chainInsertMode":             c.ChainInsertMode,
		"logPrefix":                   c.LogPrefix,
	}
}

func formatFailsafe(ps []snapshot.FailsafePort) string {
	if len(ps) == 0 {
		return "none"
	}
	names := map[uint8]string{model.ProtoTCP: "tcp", model.ProtoUDP: "udp", model.ProtoSCTP: "sctp"}
	var parts []string
	for _, p := range ps {
		s := names[p.Protocol] + ":"
		if p.Net != (netip.Prefix{}) {
			s += p.Net.String() + ":"
		}
		parts = append(parts, s+strconv.Itoa(int(p.Port)))
	}
	return strings.Join(parts, ",")
}

// printConfig writes the rows as an aligned table.
func printConfig(w io.Writer, rows []configRow) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tVALUE\tSOURCE")
	for _, r := range slices.Clone(rows) {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Key, r.Value, r.Source)
	}
	return tw.Flush()
}
