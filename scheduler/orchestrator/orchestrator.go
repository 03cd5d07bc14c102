// Package orchestrator holds the types that pass between the scheduler and
// the drivers that run workers (local processes, Docker containers, Nomad
// jobs). The scheduler says what it wants with a Deployment; a driver reports
// what it has with a Status.
package orchestrator

import "time"

// Deployment is the desired state of one served entity's workers. A change of
// anything but Replicas makes a new Deployment with a new ID (as Nomad needs a
// new job to avoid a rolling deployment); Replicas changes scale it.
type Deployment struct {
	// ID names the deployment; drivers use it for process, container or job names.
	ID       string
	Endpoint string
	Entity   string
	// Model names the registry version; ModelDir is its local directory and
	// ArtifactURL where a remote worker fetches its tar.gz.
	ModelName    string
	ModelVersion string
	ModelDir     string
	ArtifactURL  string
	// Flavors are the model version's MLflow flavors. The worker picks
	// its runtime from them (mlmodel.NeedsPython); a driver reads them to
	// run a model that needs Python where an interpreter is.
	Flavors []string
	// ArtifactToken, when set, goes with the fetch of ArtifactURL in the
	// X-Gantry-Artifact-Token header: it lets this deployment's workers
	// download their model version and nothing else. Drivers that render
	// documents for people (gantry jobs render) get it redacted.
	ArtifactToken string
	// WorkerSecret, when set, goes into the workers' environment as
	// GANTRY_WORKER_SECRET (after the entity's variables, which may not
	// name it): a worker then answers only invocations that carry it,
	// the activators'. Redacted like ArtifactToken.
	WorkerSecret string

	Replicas int
	// WorkloadSize (Small, Medium, Large; empty with provisioned
	// concurrency) and WorkloadType size each replica's resources.
	WorkloadSize string
	WorkloadType string
	Env          map[string]string
	// SecretEnv names the Env variables whose values are secrets, resolved
	// from {{secrets/scope/key}} references for this Ensure call only. A
	// driver puts them in the worker's environment and nowhere else (no
	// log, no error, no rendered document); one that cannot refuses the
	// deployment.
	SecretEnv []string
}

// Instance is one replica as a driver sees it.
type Instance struct {
	ID   string `json:"id"`
	Addr string `json:"addr"`
	// Ready is true once the worker answered /ping with 200 and until it stops.
	Ready bool `json:"ready"`
}

// Status is what a driver knows of one deployment.
type Status struct {
	ID        string
	Desired   int
	Instances []Instance
	// Failure is the reason the last replica start failed, while no replica
	// is ready; empty otherwise.
	Failure string
	// Failures counts failed starts (and exits) since the deployment began.
	Failures uint64
	// Starts is each replica's cold start, also of replicas not started
	// yet (which Instances leaves out), for the API's view; drivers that
	// do not follow the phases leave it empty.
	Starts []Start
	// Notice is what a ready worker said of its model that its owner
	// should know (api.NoticeHeader: package versions unlike those the
	// model was logged with); empty when none did.
	Notice string
}

// Start is when each cold-start phase of one replica's current run began
// (metrics.go names the phases); a zero time is a phase not reached yet.
// A restarted worker's run has no Requested: restarts are not scheduled.
type Start struct {
	ID        string
	Requested time.Time // asked for: schedule began
	// Downloading is when the model's artifact began to download (the
	// Nomad driver: the client's artifact fetch, before the task starts):
	// download began. Zero where the driver reads the model where it is
	// (local, docker) and so has no such phase.
	Downloading time.Time
	Started     time.Time // process, container or allocation started: process_start began
	Answered    time.Time // first answer to /ping: model_load began
	Ready       time.Time // /ping answered 200
	// The replica's first answered request (arrival, first byte of the
	// answer), as its /ping reported it after; FirstPhase names it
	// (PhaseFirstResponse or PhaseFirstToken), empty until then.
	FirstPhase    string
	FirstRequest  time.Time
	FirstResponse time.Time
}

// Ready counts the ready instances.
func (s Status) Ready() int {
	n := 0
	for _, in := range s.Instances {
		if in.Ready {
			n++
		}
	}
	return n
}
