package autoscaler

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gantry/gantry/autoscaler/decider"
)

var rewrite = flag.Bool("rewrite", false, "rewrite testdata/tokens/*.txt with the output the decider gives now")

// TestTokenScripts runs the scripts in testdata/tokens: a deployment that
// scales on tokens, its replicas' reports and the activators' concurrency
// given tick by tick on a fake clock, through tokenSample and the decider,
// with no network, goroutine or clock. Each command is followed by ----
// and the output it gives; `go test ./autoscaler -run TokenScripts
// -rewrite` regenerates the outputs.
//
// Commands:
//
//	spec tokens_per_replica=R min=N max=N [concurrency=C]
//	tick at=DURATION ready=N starting=N [conc=C] [ADDR=GENERATED/QUEUED/RUNNING ...]
//
// A tick prints the tokens per second (and the rate of the fastest
// replica with sequences waiting, the measured capacity), the queued
// sequences, the sample (the demand in tokens per second) and the
// decision.
func TestTokenScripts(t *testing.T) {
	files, _ := filepath.Glob("testdata/tokens/*.txt")
	if len(files) == 0 {
		t.Fatal("no scripts in testdata/tokens")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			out := runTokenScript(t, string(b))
			if out != string(b) {
				if *rewrite {
					os.WriteFile(f, []byte(out), 0o644)
					return
				}
				t.Errorf("%s: output differs (-rewrite to accept); got:\n%s", f, out)
			}
		})
	}
}

func runTokenScript(t *testing.T, script string) string {
	var out strings.Builder
	var (
		target Target
		d      *decider.Decider
		prev   = map[string]replicaTokens{}
	)
	lines := strings.Split(script, "\n")
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		if line == "" || strings.HasPrefix(line, "#") {
			out.WriteString(line + "\n")
			continue
		}
		// The command, then skip its old output up to the blank line.
		out.WriteString(line + "\n----\n")
		if i+1 < len(lines) && lines[i+1] == "----" {
			i++
			for i+1 < len(lines) && lines[i+1] != "" {
				i++
			}
		}
		f := strings.Fields(line)
		args := map[string]string{}
		reports := map[string]decider.TokenObservation{}
		for _, kv := range f[1:] {
			k, v, _ := strings.Cut(kv, "=")
			args[k] = v
		}
		num := func(k string) float64 {
			v, err := strconv.ParseFloat(args[k], 64)
			if err != nil && args[k] != "" {
				t.Fatalf("line %d: %s=%q: %v", i+1, k, args[k], err)
			}
			return v
		}
		switch f[0] {
		case "spec":
			spec := decider.DefaultSpec()
			target = Target{Deployment: "d", Min: int(num("min")), Max: int(num("max")), TokensPerReplica: num("tokens_per_replica"), TargetPerReplica: num("concurrency")}
			spec.MinReplicas, spec.MaxReplicas, spec.TargetPerReplica = target.Min, target.Max, target.TokensPerReplica
			d = decider.New(spec)
			fmt.Fprintf(&out, "one replica holds %.0f tokens/s; decisions aim at %.0f\n", spec.TargetPerReplica, spec.TargetPerReplica*spec.TargetUtilization)
		case "tick":
			at, err := time.ParseDuration(args["at"])
			if err != nil {
				t.Fatalf("line %d: at: %v", i+1, err)
			}
			now := time.Time{}.Add(at)
			target.Replicas = nil
			for k, v := range args {
				if len(k) < 2 || k[0] != 'r' || k[1] < '0' || k[1] > '9' {
					continue // not a replica (r1, r2, ...)
				}
				var gen uint64
				var q, r int
				if _, err := fmt.Sscanf(v, "%d/%d/%d", &gen, &q, &r); err != nil {
					t.Fatalf("line %d: %s=%s: want GENERATED/QUEUED/RUNNING", i+1, k, v)
				}
				reports[k] = decider.TokenObservation{At: now, Generated: gen, Queued: q, Running: r}
				target.Replicas = append(target.Replicas, k)
			}
			target.Ready, target.Starting = int(num("ready")), int(num("starting"))
			sample, tps, queued, saturated := tokenSample(now, target, reports, prev, num("conc"), target.TargetPerReplica, 3*time.Second)
			d.Record(now, sample)
			dec := d.Decide(now, decider.Inputs{Ready: target.Ready, Starting: target.Starting})
			valid := ""
			if !dec.Valid {
				valid = " (not valid)"
			}
			sat := ""
			if saturated > 0 {
				sat = fmt.Sprintf(" (a saturated replica: %.0f tokens/s)", saturated)
			}
			fmt.Fprintf(&out, "%.0f tokens/s%s, %d queued, demand %.0f tokens/s: desired %d%s, %s\n", tps, sat, queued, sample, dec.Desired, valid, dec.Reason)
		default:
			t.Fatalf("line %d: unknown command %q", i+1, f[0])
		}
		out.WriteString("\n")
		if i+1 < len(lines) && lines[i+1] == "" {
			i++ // the blank line after the output, written above
		}
	}
	return strings.TrimRight(out.String(), "\n") + "\n"
}
