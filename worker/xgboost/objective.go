package xgboost

import "math"

// link is how an objective turns margins into predictions. XGBoost does
// this in float32 and so do we, so that outputs match bit for bit in the
// common case and to within a float32 rounding otherwise.
type link int

const (
	linkIdentity link = iota // reg:squarederror, binary:logitraw, rank:*
	linkSigmoid              // binary:logistic, reg:logistic
	linkExp                  // count:poisson, reg:gamma, reg:tweedie, survival:*
	linkHinge                // binary:hinge: 1 if margin > 0, else 0
	linkSoftprob             // multi:softprob: softmax over the groups
	linkSoftmax              // multi:softmax: index of the largest margin
)

// objective is what prediction needs to know about an XGBoost objective.
type objective struct {
	link link
	// margin maps base_score, which XGBoost stores on the output scale, to
	// the margin that tree sums start from (ObjFunction::ProbToMargin).
	margin func(float32) float32
}

func identity(x float32) float32 { return x }

// logit is RegLossObj::ProbToMargin for logistic losses:
// -logf(1.0f / base_score - 1.0f), with float32 rounding at each step.
func logit(p float32) float32 {
	t := float32(1/p) - 1
	return -float32(math.Log(float64(t)))
}

func logf(p float32) float32 { return float32(math.Log(float64(p))) }

// objectives lists the objectives this package predicts for. Training-only
// details (scale_pos_weight, huber_slope, ...) do not affect prediction.
var objectives = map[string]objective{
	"reg:squarederror":     {linkIdentity, identity},
	"reg:linear":           {linkIdentity, identity}, // old alias
	"reg:squaredlogerror":  {linkIdentity, identity},
	"reg:pseudohubererror": {linkIdentity, identity},
	"reg:absoluteerror":    {linkIdentity, identity},
	"reg:quantileerror":    {linkIdentity, identity},
	"binary:logitraw":      {linkIdentity, identity},
	"rank:pairwise":        {linkIdentity, identity},
	"rank:ndcg":            {linkIdentity, identity},
	"rank:map":             {linkIdentity, identity},
	"reg:logistic":         {linkSigmoid, logit},
	"binary:logistic":      {linkSigmoid, logit},
	"count:poisson":        {linkExp, logf},
	"reg:gamma":            {linkExp, logf},
	"reg:tweedie":          {linkExp, logf},
	"survival:cox":         {linkExp, logf},
	"survival:aft":         {linkExp, logf},
	"binary:hinge":         {linkHinge, identity},
	"multi:softprob":       {linkSoftprob, identity},
	"multi:softmax":        {linkSoftmax, identity},
}

// sigmoid is XGBoost's common::Sigmoid: 1.0f / (1.0f + expf(-x)).
func sigmoid(x float32) float32 {
	e := float32(math.Exp(float64(-x)))
	return 1 / (1 + e)
}

func expf(x float32) float32 { return float32(math.Exp(float64(x))) }

// softmax replaces m with its softmax the way common::Softmax does: the
// exponentials in float32, their sum in float64.
func softmax(m []float32) {
	wmax := m[0]
	for _, v := range m[1:] {
		if v > wmax {
			wmax = v
		}
	}
	var wsum float64
	for i, v := range m {
		e := float32(math.Exp(float64(v - wmax)))
		m[i] = e
		wsum += float64(e)
	}
	s := float32(wsum)
	for i := range m {
		m[i] /= s
	}
}

// argmax returns the index of the first largest value, as std::max_element
// and numpy's argmax do.
func argmax(m []float32) int {
	best := 0
	for i, v := range m {
		if v > m[best] {
			best = i
		}
	}
	return best
}
