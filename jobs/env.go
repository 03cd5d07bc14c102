package jobs

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// A served entity's environment_vars reach the worker's environment, where
// some names are not configuration but a way to run code or to escape the
// limits Gantry sets: the dynamic loader loads LD_PRELOAD's object into the
// worker before main (a model's tar can ship that object), Python and
// other runtimes load modules named in their variables, glibc reads
// GLIBC_TUNABLES and GCONV_PATH, OpenSSL loads engines from OPENSSL_CONF,
// the NVIDIA container runtime hands out the GPUs NVIDIA_VISIBLE_DEVICES
// names. The scheduler refuses these names at validation (400) and every
// driver refuses them again before it starts a worker, so a config stored
// before the rule existed cannot start one either.
//
// Names are compared in upper case: the loader reads only LD_PRELOAD, but
// refusing ld_preload costs nobody anything and leaves no doubt.
var (
	// deniedEnvPrefixes are refused with everything after them.
	deniedEnvPrefixes = []string{
		"LD_",        // dynamic loader: LD_PRELOAD, LD_LIBRARY_PATH, LD_AUDIT
		"DYLD_",      // macOS loader
		"PYTHON",     // PYTHONPATH, PYTHONSTARTUP, PYTHONHOME, PYTHONINSPECT
		"MALLOC_",    // glibc malloc debugging hooks
		"GLIBC_",     // GLIBC_TUNABLES (CVE-2023-4911)
		"BASH_FUNC_", // exported shell functions
		"NODE_",      // NODE_OPTIONS --require
		"JAVA_",      // JAVA_TOOL_OPTIONS -javaagent
		"_JAVA_",     // _JAVA_OPTIONS
		"JDK_JAVA_",  // JDK_JAVA_OPTIONS
		"PERL5",      // PERL5LIB, PERL5OPT
		"RUBY",       // RUBYOPT, RUBYLIB
		"OPENSSL_",   // OPENSSL_CONF loads engines and providers
		"NVIDIA_",    // NVIDIA_VISIBLE_DEVICES: GPUs beyond the allocation
		"NOMAD_",     // the task's own Nomad settings
		"GANTRY_",    // the worker's flags (every flag reads GANTRY_<FLAG>)
	}
	// deniedEnvNames are refused as they are.
	deniedEnvNames = []string{
		// Go runtime of the worker: debugging switches and the sizing that
		// workload_size sets.
		"GODEBUG", "GOTRACEBACK", "GOGC", "GOMEMLIMIT", "GOMAXPROCS", "GORACE", "GOCOVERDIR", "GOFIPS140",
		// Where programs and libraries are found, and shell start-up.
		"PATH", "HOME", "SHELL", "ENV", "BASH_ENV", "IFS", "CDPATH", "SHELLOPTS", "BASHOPTS", "PS4", "PROMPT_COMMAND",
		"TMPDIR", "TMP", "TEMP", "USER", "LOGNAME", "PWD",
		// glibc loads code or data from these.
		"GCONV_PATH", "LOCPATH", "NLSPATH", "HOSTALIASES", "RES_OPTIONS", "LOCALDOMAIN",
		// Interpreter paths.
		"PERLLIB", "TCLLIBPATH", "R_PROFILE", "R_PROFILE_USER", "R_LIBS", "R_LIBS_USER",
		"CLASSPATH", "VIRTUAL_ENV", "CONDA_PREFIX",
		"CUDA_VISIBLE_DEVICES",
	}
)

// allowedEnvNames are worker settings that a served entity may choose for
// itself although they start with a denied prefix: the Python interpreter
// of the process runtime and its batching. The interpreter runs the
// entity's own model code, which can already run anything in the worker,
// so naming it gives the entity nothing it did not have.
var allowedEnvNames = []string{"GANTRY_PYTHON", "GANTRY_MAX_BATCH_SIZE", "GANTRY_MAX_BATCH_WAIT"}

// CheckEnv returns an error naming the variable when a served entity may
// not set name in its worker's environment, or nil.
func CheckEnv(name string) error {
	for _, n := range allowedEnvNames {
		if name == n {
			return nil
		}
	}
	up := strings.ToUpper(name)
	for _, n := range deniedEnvNames {
		if up == n {
			return fmt.Errorf("%s is reserved: it changes how the worker's runtime or loader behaves; Gantry does not let a served entity set it", name)
		}
	}
	for _, p := range deniedEnvPrefixes {
		if strings.HasPrefix(up, p) {
			return fmt.Errorf("%s is reserved: names starting with %s change how the worker's runtime or loader behaves; Gantry does not let a served entity set them", name, p)
		}
	}
	return nil
}

// CheckEnvValue checks the value of a worker setting that a served entity
// may set (allowedEnvNames), so that a bad one is a 400 at create, not a
// worker that fails to start. Other variables are the model's business.
func CheckEnvValue(name, value string) error {
	switch name {
	case "GANTRY_PYTHON":
		if strings.TrimSpace(value) == "" {
			return fmt.Errorf("%s is empty; name a Python interpreter, such as /opt/envs/churn/bin/python", name)
		}
	case "GANTRY_MAX_BATCH_SIZE":
		if n, err := strconv.Atoi(value); err != nil || n < 1 || n > 1<<20 {
			return fmt.Errorf("%s must be a number of rows from 1 (no batching) to %d", name, 1<<20)
		}
	case "GANTRY_MAX_BATCH_WAIT":
		if d, err := time.ParseDuration(value); err != nil || d < 0 || d > time.Second {
			return fmt.Errorf("%s must be a duration from 0 to 1s, such as 2ms", name)
		}
	}
	return nil
}

// CheckEnvs checks every name of env (in sorted order, so the error is
// stable).
func CheckEnvs(env map[string]string) error {
	names := make([]string, 0, len(env))
	for k := range env {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if err := CheckEnv(k); err != nil {
			return fmt.Errorf("environment_vars: %w", err)
		}
		if err := CheckEnvValue(k, env[k]); err != nil {
			return fmt.Errorf("environment_vars: %w", err)
		}
	}
	return nil
}
