package nomadtest

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/nomad/api"
)

// alloc is one placed allocation and the client that runs it. Its fields
// are set at placement and then only read, except those marked as guarded
// by srv.mu.
type alloc struct {
	srv        *Server
	job        *api.Job
	group      *api.TaskGroup
	task       *api.Task
	node       *Node
	index      int
	need       resources
	spec       string
	dir        string
	ports      map[string]int
	deployment *api.Deployment
	// tmplEnv is what the task's env templates rendered for its current
	// run; only the runner goroutine touches it.
	tmplEnv map[string]string

	// Guarded by srv.mu.
	stub     api.AllocationListStub
	pid      int
	stopping bool
	stop     chan struct{} // closed when the allocation is to stop
	done     chan struct{} // closed when the runner is gone
}

// terminal reports whether the allocation has finished on its client.
// srv.mu must be held.
func (a *alloc) terminal() bool {
	switch a.stub.ClientStatus {
	case api.AllocClientStatusComplete, api.AllocClientStatusFailed, api.AllocClientStatusLost:
		return true
	}
	return false
}

// copyStub returns a deep copy of the list stub. srv.mu must be held.
func (a *alloc) copyStub() *api.AllocationListStub {
	c := a.stub
	c.TaskStates = map[string]*api.TaskState{}
	for k, ts := range a.stub.TaskStates {
		t := *ts
		t.Events = append([]*api.TaskEvent(nil), ts.Events...)
		c.TaskStates[k] = &t
	}
	if a.stub.DeploymentStatus != nil {
		d := *a.stub.DeploymentStatus
		c.DeploymentStatus = &d
	}
	return &c
}

// stopLocked asks the allocation to stop. srv.mu must be held.
func (a *alloc) stopLocked(why string) {
	if a.stopping {
		return
	}
	a.stopping = true
	a.stub.DesiredStatus, a.stub.DesiredDescription = api.AllocDesiredStatusStop, why
	a.stub.ModifyIndex = a.srv.write("allocs")
	close(a.stop)
}

// event appends a task event and updates the task state. srv.mu must be
// held.
func (a *alloc) eventLocked(typ, msg string, details map[string]string, update func(*api.TaskState)) {
	ts := a.stub.TaskStates[a.task.Name]
	ts.Events = append(ts.Events, &api.TaskEvent{Type: typ, Time: time.Now().UnixNano(), DisplayMessage: msg, Message: msg, Details: details})
	if update != nil {
		update(ts)
	}
	a.stub.ModifyTime = time.Now().UnixNano()
	a.stub.ModifyIndex = a.srv.write("allocs")
}

func (a *alloc) event(typ, msg string, details map[string]string, update func(*api.TaskState)) {
	a.srv.mu.Lock()
	defer a.srv.mu.Unlock()
	a.eventLocked(typ, msg, details, update)
}

// errNoRestart marks a failure that the restart policy does not retry.
var errNoRestart = errors.New("not restartable")

// run is the client: it runs the task, restarts it per the restart policy,
// and settles the allocation's client status.
func (a *alloc) run() {
	s := a.srv
	defer s.running.Done()
	defer close(a.done)

	a.event(api.TaskReceived, "Task received by client", nil, nil)
	rp := a.task.RestartPolicy
	if rp == nil {
		rp = a.group.RestartPolicy
	}
	var restarts []time.Time
	downloaded := false
	for {
		err := a.runOnce(&downloaded)
		if err == nil { // stopped on request
			s.mu.Lock()
			a.eventLocked(api.TaskKilled, "Task successfully killed", nil, func(ts *api.TaskState) {
				ts.State, ts.FinishedAt = "dead", time.Now()
			})
			a.stub.ClientStatus, a.stub.ClientDescription = api.AllocClientStatusComplete, "All tasks have completed"
			a.stub.ModifyIndex = s.write("allocs")
			s.unblock()
			s.mu.Unlock()
			return
		}
		// Keep the restarts within the interval, as Nomad's restart tracker.
		now := time.Now()
		kept := restarts[:0]
		for _, t := range restarts {
			if now.Sub(t) < *rp.Interval {
				kept = append(kept, t)
			}
		}
		restarts = kept
		if !errors.Is(err, errNoRestart) && len(restarts) < *rp.Attempts {
			restarts = append(restarts, now)
			a.event(api.TaskRestarting, fmt.Sprintf("Task restarting in %s", *rp.Delay),
				map[string]string{"restart_reason": "Restart within policy", "start_delay": strconv.FormatInt(int64(*rp.Delay), 10)},
				func(ts *api.TaskState) { ts.Restarts++; ts.LastRestart = now })
			select {
			case <-a.stop:
				continue // runOnce sees the stop and returns nil
			case <-time.After(*rp.Delay):
			}
			continue
		}
		if *rp.Mode == "delay" && !errors.Is(err, errNoRestart) {
			// Mode delay waits out the interval and starts over.
			select {
			case <-a.stop:
			case <-time.After(*rp.Interval):
			}
			restarts = nil
			continue
		}
		s.mu.Lock()
		a.eventLocked(api.TaskNotRestarting, fmt.Sprintf("Exceeded allowed attempts %d in interval %v and mode is %q", *rp.Attempts, *rp.Interval, *rp.Mode),
			map[string]string{"fails_task": "true"}, func(ts *api.TaskState) {
				ts.State, ts.Failed, ts.FinishedAt = "dead", true, time.Now()
			})
		a.stub.ClientStatus, a.stub.ClientDescription = api.AllocClientStatusFailed, "Failed tasks"
		a.stub.ModifyIndex = s.write("allocs")
		s.healthy(a, false)
		s.unblock()
		closed := s.closed
		s.mu.Unlock()
		if !closed {
			a.reschedule()
		}
		return
	}
}

// reschedule replaces the failed allocation after the reschedule policy's
// delay, unless it is stopped first.
func (a *alloc) reschedule() {
	rp := a.group.ReschedulePolicy
	if rp == nil || (!deref(rp.Unlimited) && deref(rp.Attempts) == 0) {
		return
	}
	delay := deref(rp.Delay)
	s := a.srv
	s.running.Add(1)
	go func() {
		defer s.running.Done()
		select {
		case <-a.stop:
			return
		case <-time.After(delay):
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.closed || a.stopping {
			return
		}
		// The failed allocation makes way for its replacement.
		a.stopLocked("alloc was rescheduled because it failed")
		s.evaluate(jobKey{a.stub.Namespace, a.stub.JobID}, "alloc-failure")
	}()
}

// runOnce starts the task and waits for it: nil when it was stopped on
// request, an error saying why it failed otherwise.
func (a *alloc) runOnce(downloaded *bool) error {
	s := a.srv
	select {
	case <-a.stop:
		return nil
	default:
	}
	taskDir := filepath.Join(a.dir, a.task.Name)
	if !*downloaded {
		a.event(api.TaskSetup, "Building Task Directory", nil, nil)
		for _, d := range []string{filepath.Join(a.dir, "alloc", "logs"), filepath.Join(a.dir, "alloc", "data"),
			filepath.Join(taskDir, "local"), filepath.Join(taskDir, "secrets"), filepath.Join(taskDir, "tmp")} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				a.event(api.TaskSetupFailure, err.Error(), nil, func(ts *api.TaskState) { ts.Failed = true })
				return fmt.Errorf("%w: %v", errNoRestart, err)
			}
		}
		if len(a.task.Artifacts) > 0 {
			a.event(api.TaskDownloadingArtifacts, "Client is downloading artifacts", nil, nil)
		}
		for _, art := range a.task.Artifacts {
			if err := fetch(art, taskDir, a.env(taskDir)); err != nil {
				msg := fmt.Sprintf("failed to download artifact %q: %v", *art.GetterSource, err)
				a.event(api.TaskArtifactDownloadFailed, msg, map[string]string{"download_error": msg}, nil)
				return errors.New(msg)
			}
		}
		*downloaded = true
	}
	if len(a.task.Templates) > 0 {
		env, stopped, err := a.renderTemplates(taskDir)
		if stopped {
			return nil
		}
		if err != nil {
			a.event(api.TaskKilling, err.Error(), map[string]string{"kill_error": err.Error()}, func(ts *api.TaskState) { ts.Failed = true })
			return fmt.Errorf("%w: %v", errNoRestart, err)
		}
		a.tmplEnv = env
	}

	argv, err := a.command(taskDir)
	if err != nil {
		a.event(api.TaskDriverFailure, err.Error(), map[string]string{"driver_error": err.Error()}, nil)
		return fmt.Errorf("%w: %v", errNoRestart, err)
	}
	logs := filepath.Join(a.dir, "alloc", "logs", a.task.Name)
	stdout, err := os.OpenFile(logs+".stdout.0", os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer stdout.Close()
	stderr, err := os.OpenFile(logs+".stderr.0", os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer stderr.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = taskDir
	cmd.Env = os.Environ()
	for k, v := range a.env(taskDir) {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	// Tasks must not outlive the test process.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		msg := fmt.Sprintf("failed to launch command with executor: %v", err)
		a.event(api.TaskDriverFailure, msg, map[string]string{"driver_error": msg}, nil)
		return errors.New(msg)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()

	s.mu.Lock()
	a.pid = cmd.Process.Pid
	a.eventLocked(api.TaskStarted, "Task started by client", nil, func(ts *api.TaskState) {
		ts.State, ts.StartedAt = "running", time.Now()
	})
	a.stub.ClientStatus, a.stub.ClientDescription = api.AllocClientStatusRunning, "Tasks are running"
	a.register()
	s.mu.Unlock()
	var healthy <-chan time.Time
	if a.deployment != nil && a.group.Update != nil {
		healthy = time.After(deref(a.group.Update.MinHealthyTime))
	}

wait:
	for {
		select {
		case <-healthy:
			s.mu.Lock()
			s.healthy(a, true)
			s.mu.Unlock()
			healthy = nil
		case <-a.stop:
			a.kill(cmd, exited)
			// Nomad's task runner reports the exit of a killed task too
			// (handleKill, then emitExitResultEvent): Killing, Terminated,
			// Killed.
			code, msg := exitResult(waitErr)
			a.event(api.TaskTerminated, msg, map[string]string{"exit_code": strconv.Itoa(code)}, nil)
			return nil
		case <-exited:
			break wait
		}
	}
	s.mu.Lock()
	a.pid = 0
	a.deregister()
	code, msg := exitResult(waitErr)
	a.eventLocked(api.TaskTerminated, msg, map[string]string{"exit_code": strconv.Itoa(code)}, nil)
	s.mu.Unlock()
	return errors.New(msg)
}

// exitResult is the exit code of a task and the message of its Terminated
// event.
func exitResult(waitErr error) (int, string) {
	code := -1
	var ee *exec.ExitError
	if errors.As(waitErr, &ee) {
		code = ee.ExitCode()
	} else if waitErr == nil {
		code = 0
	}
	msg := fmt.Sprintf("Exit Code: %d", code)
	if waitErr != nil && code == -1 {
		msg += ", Exit Message: " + strconv.Quote(waitErr.Error())
	}
	return code, msg
}

// kill stops the task as a Nomad client does: deregister its services,
// wait the group's shutdown_delay, send the kill signal and, after the
// kill timeout, SIGKILL.
func (a *alloc) kill(cmd *exec.Cmd, exited <-chan struct{}) {
	s := a.srv
	s.mu.Lock()
	a.deregister()
	s.mu.Unlock()
	if d := deref(a.group.ShutdownDelay); d > 0 {
		select {
		case <-time.After(d):
		case <-exited:
		}
	}
	a.event(api.TaskKilling, "Sent interrupt", nil, nil)
	sig := os.Signal(syscall.SIGINT) // Nomad's default kill_signal, docker's is SIGTERM
	if a.task.Driver == "docker" {
		sig = syscall.SIGTERM
	}
	if ks := a.task.KillSignal; ks != "" {
		if n, ok := signals[ks]; ok {
			sig = n
		}
	}
	cmd.Process.Signal(sig)
	select {
	case <-exited:
	case <-time.After(deref(a.task.KillTimeout)):
		cmd.Process.Kill()
		<-exited
	}
	s.mu.Lock()
	a.pid = 0
	s.mu.Unlock()
}

var signals = map[string]syscall.Signal{
	"SIGINT": syscall.SIGINT, "SIGTERM": syscall.SIGTERM, "SIGQUIT": syscall.SIGQUIT,
	"SIGHUP": syscall.SIGHUP, "SIGKILL": syscall.SIGKILL, "SIGUSR1": syscall.SIGUSR1, "SIGUSR2": syscall.SIGUSR2,
}

// register adds the allocation's services. srv.mu must be held.
func (a *alloc) register() {
	svcs := append(append([]*api.Service(nil), a.group.Services...), a.task.Services...)
	for _, svc := range svcs {
		if svc.Provider != "nomad" {
			continue
		}
		id := fmt.Sprintf("_nomad-task-%s-group-%s-%s-%s", a.stub.ID, *a.group.Name, svc.Name, svc.PortLabel)
		index := a.srv.write("service_registrations")
		a.srv.services[id] = &api.ServiceRegistration{
			ID: id, ServiceName: svc.Name, Namespace: a.stub.Namespace, NodeID: a.node.ID,
			Datacenter: a.node.Datacenter, JobID: a.stub.JobID, AllocID: a.stub.ID,
			Tags: svc.Tags, Address: "127.0.0.1", Port: a.ports[svc.PortLabel],
			CreateIndex: index, ModifyIndex: index,
		}
	}
}

// deregister removes the allocation's services. srv.mu must be held.
func (a *alloc) deregister() {
	for id, sr := range a.srv.services {
		if sr.AllocID == a.stub.ID {
			delete(a.srv.services, id)
			a.srv.write("service_registrations")
		}
	}
}

// env is the task's environment: Nomad's variables and the task's env,
// interpolated.
func (a *alloc) env(taskDir string) map[string]string {
	env := map[string]string{
		"NOMAD_ALLOC_DIR":    filepath.Join(a.dir, "alloc"),
		"NOMAD_TASK_DIR":     filepath.Join(taskDir, "local"),
		"NOMAD_SECRETS_DIR":  filepath.Join(taskDir, "secrets"),
		"NOMAD_ALLOC_ID":     a.stub.ID,
		"NOMAD_ALLOC_NAME":   a.stub.Name,
		"NOMAD_ALLOC_INDEX":  strconv.Itoa(a.index),
		"NOMAD_JOB_ID":       *a.job.ID,
		"NOMAD_JOB_NAME":     *a.job.Name,
		"NOMAD_GROUP_NAME":   *a.group.Name,
		"NOMAD_TASK_NAME":    a.task.Name,
		"NOMAD_NAMESPACE":    *a.job.Namespace,
		"NOMAD_REGION":       *a.job.Region,
		"NOMAD_DC":           a.node.Datacenter,
		"NOMAD_CPU_LIMIT":    strconv.Itoa(deref(a.task.Resources.CPU) + deref(a.task.Resources.Cores)*a.node.CPU/a.node.Cores),
		"NOMAD_MEMORY_LIMIT": strconv.Itoa(deref(a.task.Resources.MemoryMB)),
	}
	for label, port := range a.ports {
		p := strconv.Itoa(port)
		env["NOMAD_IP_"+label], env["NOMAD_PORT_"+label], env["NOMAD_ADDR_"+label] = "127.0.0.1", p, "127.0.0.1:"+p
		env["NOMAD_HOST_IP_"+label], env["NOMAD_HOST_PORT_"+label], env["NOMAD_HOST_ADDR_"+label] = "127.0.0.1", p, "127.0.0.1:"+p
	}
	// Rendered values are the task's as they are: no interpolation.
	for k, v := range a.tmplEnv {
		env[k] = v
	}
	for k, v := range a.task.Env {
		env[k] = interpolate(v, env, a.node)
	}
	return env
}

var varRE = regexp.MustCompile(`\$\{([^}]+)\}`)

// interpolate replaces ${NAME} with the task's variables and ${node.*},
// ${attr.*} and ${meta.*} with the node's, leaving what it does not know
// as it is, as Nomad does.
func interpolate(s string, env map[string]string, n *Node) string {
	return varRE.ReplaceAllStringFunc(s, func(m string) string {
		name := m[2 : len(m)-1]
		if v, ok := env[name]; ok {
			return v
		}
		if strings.HasPrefix(name, "env.") {
			if v, ok := env[strings.TrimPrefix(name, "env.")]; ok {
				return v
			}
		}
		if v, ok := attribute(m, n); ok && v != m {
			return v
		}
		return m
	})
}

// command is the task's argv, from its driver config.
func (a *alloc) command(taskDir string) ([]string, error) {
	env := a.env(taskDir)
	var args []string
	if raw, ok := a.task.Config["args"]; ok {
		list, ok := raw.([]any)
		if !ok {
			return nil, fmt.Errorf("failed to decode driver config: args: want a list of strings")
		}
		for _, v := range list {
			sv, ok := v.(string)
			if !ok {
				return nil, fmt.Errorf("failed to decode driver config: args: want a list of strings")
			}
			args = append(args, interpolate(sv, env, a.node))
		}
	}
	switch a.task.Driver {
	case "raw_exec", "exec":
		command, _ := a.task.Config["command"].(string)
		if command == "" {
			return nil, fmt.Errorf("failed to decode driver config: missing required attribute \"command\"")
		}
		return append([]string{interpolate(command, env, a.node)}, args...), nil
	case "docker":
		if img, _ := a.task.Config["image"].(string); img == "" {
			return nil, fmt.Errorf("failed to decode driver config: missing required attribute \"image\"")
		}
		if a.srv.cfg.DockerEntrypoint == "" {
			return nil, fmt.Errorf("nomadtest: docker tasks need Config.DockerEntrypoint")
		}
		return append([]string{a.srv.cfg.DockerEntrypoint}, args...), nil
	}
	return nil, fmt.Errorf("nomadtest: task driver %q is not simulated", a.task.Driver)
}

// fetch downloads an artifact into the task dir the way go-getter does for
// http(s) sources: an archive (by the "archive" option or the file's
// extension) is unpacked into the destination, anything else is saved in
// it under its base name.
func fetch(art *api.TaskArtifact, taskDir string, env map[string]string) error {
	src := interpolate(*art.GetterSource, env, nil)
	u, err := url.Parse(src)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return fmt.Errorf("nomadtest fetches http(s) artifacts only, not %q", src)
	}
	archive := art.GetterOptions["archive"]
	if archive == "" && (strings.HasSuffix(u.Path, ".tar.gz") || strings.HasSuffix(u.Path, ".tgz")) {
		archive = "tar.gz"
	}
	dest := filepath.Join(taskDir, filepath.FromSlash(deref(art.RelativeDest)))
	if err := os.MkdirAll(dest, 0o755); err != nil {
		return err
	}
	req, err := http.NewRequest(http.MethodGet, src, nil)
	if err != nil {
		return err
	}
	for k, v := range art.GetterHeaders {
		req.Header.Set(k, v)
	}
	c := &http.Client{Timeout: time.Minute}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("bad response code: %d", resp.StatusCode)
	}
	switch archive {
	case "tar.gz", "tgz":
		return untar(resp.Body, dest)
	case "", "false":
		f, err := os.Create(filepath.Join(dest, path.Base(u.Path)))
		if err != nil {
			return err
		}
		if _, err := io.Copy(f, resp.Body); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	}
	return fmt.Errorf("nomadtest does not unpack %q archives", archive)
}

func untar(r io.Reader, dest string) error {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return fmt.Errorf("error decompressing: %w", err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		name := filepath.Clean(filepath.FromSlash(h.Name))
		if filepath.IsAbs(name) || name == ".." || strings.HasPrefix(name, ".."+string(filepath.Separator)) {
			return fmt.Errorf("entry %q escapes the destination", h.Name)
		}
		target := filepath.Join(dest, name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			f, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, os.FileMode(h.Mode)&0o777|0o600)
			if err != nil {
				return err
			}
			if _, err := io.Copy(f, tr); err != nil {
				f.Close()
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
		}
	}
}
