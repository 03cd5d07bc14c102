package scheduler

import (
	"fmt"
	"strings"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/scheduler/store"
)

// LLM entities are the served entities that take the unified LLM request:
// external models, and model versions whose flavor names an llm/v1 task
// (gguf, whose task defaults to chat, and openai_server with a task). The
// AI gateway's guardrails read and rewrite that request and its answers,
// so they apply to LLM entities only; an openai_server flavor without a
// task takes any body the server does, which a guardrail cannot read.

// entityTasks maps each served entity of c by name to its LLM task, ""
// for an entity that is not an LLM entity. A model version's task comes
// from the registry, which reads the disk on a version's first look-up:
// call it before taking s.mu.
func (s *Scheduler) entityTasks(c *api.EndpointConfig) map[string]string {
	tasks := map[string]string{}
	if c == nil {
		return tasks
	}
	for _, e := range c.ServedEntities {
		switch {
		case isExternal(&e):
			tasks[e.Name] = e.ExternalModel.Task
		case deploys(&e):
			tasks[e.Name] = s.cfg.Registry.Task(e.EntityName, e.EntityVersion)
		default:
			tasks[e.Name] = "" // features
		}
	}
	return tasks
}

// sameEntities reports whether configs a and b (either nil) serve the
// same entities: the same names, models and versions, or external
// models of the same tasks.
func sameEntities(a, b *api.EndpointConfig) bool {
	if a == nil || b == nil {
		return a == b
	}
	if len(a.ServedEntities) != len(b.ServedEntities) {
		return false
	}
	for i, x := range a.ServedEntities {
		y := b.ServedEntities[i]
		if x.Name != y.Name || x.EntityName != y.EntityName || x.EntityVersion != y.EntityVersion ||
			(x.ExternalModel == nil) != (y.ExternalModel == nil) || x.ExternalModel != nil && x.ExternalModel.Task != y.ExternalModel.Task {
			return false
		}
	}
	return true
}

// llmTasksDiffer says which served LLM entities of c have different
// tasks, or "": all LLM entities of an endpoint share one task, as
// Databricks asks of external models, so that the OpenAI path an
// endpoint answers does not depend on which entity the traffic picks.
// External entities are checked by checkExternalMix.
func llmTasksDiffer(c *api.EndpointConfig, task func(i int) string) *api.Error {
	first, want := -1, ""
	for i := range c.ServedEntities {
		t := task(i)
		if t == "" {
			continue
		}
		if first < 0 {
			first, want = i, t
			continue
		}
		if t != want {
			return invalid("config.served_entities[%d]: its model serves %s, served_entities[%d]'s %s; all LLM entities of an endpoint must serve the same task",
				i, t, first, want)
		}
	}
	return nil
}

// notLLMProblem says why guardrails cannot apply to config c of endpoint
// ep, or "": every served entity must be an LLM entity (tasks from
// entityTasks), since a guardrail would let the calls of any other pass
// unguarded.
func notLLMProblem(ep string, c *api.EndpointConfig, tasks map[string]string) string {
	llm := 0
	var not []string
	for _, e := range c.ServedEntities {
		if tasks[e.Name] == "" {
			not = append(not, e.Name)
		} else {
			llm++
		}
	}
	const what = "an external model, or a model whose gguf or openai_server flavor names an llm/v1 task"
	switch {
	case llm == 0:
		return fmt.Sprintf("guardrails: endpoint %s serves no LLM entity (%s); guardrails apply to LLM entities only", ep, what)
	case len(not) > 0:
		return fmt.Sprintf("guardrails: served entity %s of endpoint %s is not an LLM entity (%s); guardrails apply to LLM entities only, and its calls would pass unguarded",
			strings.Join(not, ", "), ep, what)
	}
	return ""
}

// judgeProblem says why guardrails.judge_entity name is not a chat LLM
// entity (external or served) of the config c of endpoint ep, or "". A
// config update that would drop the judge is refused too.
func judgeProblem(ep string, c *api.EndpointConfig, tasks map[string]string, name string) string {
	var names []string
	for _, e := range c.ServedEntities {
		if e.Name != name {
			names = append(names, e.Name)
			continue
		}
		if tasks[name] != api.TaskChat {
			return fmt.Sprintf("guardrails.judge_entity: served entity %s of endpoint %s is not an LLM entity of task %s; a judge answers chat requests", name, ep, api.TaskChat)
		}
		return ""
	}
	return fmt.Sprintf("guardrails.judge_entity: %q is not a served entity of endpoint %s; it has %s", clipQ(name), ep, strings.Join(names, ", "))
}

// guardrailsProblem checks guardrails g for endpoint ep: its config and
// the one rolling out, if any, against read, the copies of them whose
// tasks (entityTasks) were read before the lock.
func guardrailsProblem(name string, ep *store.Endpoint, read [2]*api.EndpointConfig, tasks [2]map[string]string, g *api.Guardrails) error {
	for i, c := range []*api.EndpointConfig{&ep.Config, ep.Pending} {
		if !sameEntities(c, read[i]) {
			// A config update came between the registry's reads and now.
			return api.Errorf(api.ErrResourceConflict, "endpoint %s changed its served entities while the guardrails were checked; retry", name)
		}
		if c == nil {
			continue
		}
		msg := notLLMProblem(name, c, tasks[i])
		if msg == "" && g.JudgeEntity != "" {
			msg = judgeProblem(name, c, tasks[i], g.JudgeEntity)
		}
		if msg != "" {
			return invalid("%s", msg)
		}
	}
	return nil
}
