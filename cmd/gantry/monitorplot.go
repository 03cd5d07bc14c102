package main

import (
	"bytes"
	"fmt"
	"html"
	"image"
	"image/color"
	"image/png"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/gantry/gantry/api"
)

// A drift chart has one panel per watched column: its drift metric over
// time, one line per served entity and drift type (whole windows, not
// slices), and the metric's threshold as a dashed line.
type panel struct {
	column, metric string
	threshold      *float64
	series         []series
}

type series struct {
	name string
	pts  []point
}

type point struct {
	t time.Time
	v float64
}

// defaultDriftMetric is what a panel shows when the monitor sets no
// threshold on the column's metrics.
var defaultDriftMetric = []string{"ks_statistic", "js_distance"}

// drawPanels picks each column's metric (the first with a threshold, else
// KS for numeric columns and JS for categorical ones) and its series.
func drawPanels(rep *api.MonitorReport) []panel {
	byCol := map[string][]api.MonitorMetric{}
	var cols []string
	for _, r := range rep.Drift {
		if r.SliceKey != "" || r.Value == nil {
			continue
		}
		if _, ok := byCol[r.Column]; !ok {
			cols = append(cols, r.Column)
		}
		byCol[r.Column] = append(byCol[r.Column], r)
	}
	sort.Strings(cols)
	var out []panel
	for _, c := range cols {
		rows := byCol[c]
		metric := ""
		have := map[string]bool{}
		for _, r := range rows {
			have[r.Metric] = true
			if r.Threshold != nil && (metric == "" || r.Metric < metric) {
				metric = r.Metric
			}
		}
		for _, m := range defaultDriftMetric {
			if metric == "" && have[m] {
				metric = m
			}
		}
		if metric == "" {
			continue
		}
		p := panel{column: c, metric: metric}
		idx := map[string]int{}
		for _, r := range rows {
			if r.Metric != metric {
				continue
			}
			p.threshold = r.Threshold
			name := r.ServedEntity + " " + r.DriftType
			i, ok := idx[name]
			if !ok {
				i = len(p.series)
				idx[name] = i
				p.series = append(p.series, series{name: name})
			}
			p.series[i].pts = append(p.series[i].pts, point{r.WindowStart, *r.Value})
		}
		for i := range p.series {
			sort.Slice(p.series[i].pts, func(a, b int) bool { return p.series[i].pts[a].t.Before(p.series[i].pts[b].t) })
		}
		sort.Slice(p.series, func(a, b int) bool { return p.series[a].name < p.series[b].name })
		out = append(out, p)
	}
	return out
}

// Chart geometry, in pixels.
const (
	plotW, panelH          = 800, 240
	padL, padR, padT, padB = 60, 180, 30, 30
)

var palette = []color.RGBA{{31, 119, 180, 255}, {255, 127, 14, 255}, {44, 160, 44, 255}, {148, 103, 189, 255},
	{140, 86, 75, 255}, {227, 119, 194, 255}, {127, 127, 127, 255}, {23, 190, 207, 255}}

var thresholdColor = color.RGBA{214, 39, 40, 255}

// scale maps panel p's times and values to pixels inside panel number i.
type scale struct {
	t0, t1 time.Time
	vmax   float64
	top    int
}

func newScale(p panel, i int) scale {
	s := scale{top: i * panelH}
	first := true
	for _, se := range p.series {
		for _, pt := range se.pts {
			if first || pt.t.Before(s.t0) {
				s.t0 = pt.t
			}
			if first || pt.t.After(s.t1) {
				s.t1 = pt.t
			}
			first = false
			s.vmax = math.Max(s.vmax, pt.v)
		}
	}
	if p.threshold != nil {
		s.vmax = math.Max(s.vmax, *p.threshold)
	}
	if s.vmax <= 0 {
		s.vmax = 1
	}
	s.vmax *= 1.1
	return s
}

func (s scale) x(t time.Time) float64 {
	span := s.t1.Sub(s.t0)
	if span <= 0 {
		return padL + float64(plotW-padL-padR)/2
	}
	return padL + float64(plotW-padL-padR)*float64(t.Sub(s.t0))/float64(span)
}

func (s scale) y(v float64) float64 {
	return float64(s.top+panelH-padB) - float64(panelH-padT-padB)*math.Max(0, v)/s.vmax
}

func hex(c color.RGBA) string { return fmt.Sprintf("#%02x%02x%02x", c.R, c.G, c.B) }

// plotSVG writes the chart as SVG, by hand; title names what a chart
// without panels has nothing of yet.
func plotSVG(title string, panels []panel) []byte {
	h := max(1, len(panels)) * panelH
	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">`+"\n", plotW, h, plotW, h)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", plotW, h)
	if len(panels) == 0 {
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s: nothing to plot yet</text>`+"\n", padL, panelH/2, html.EscapeString(title))
	}
	for i, p := range panels {
		s := newScale(p, i)
		x0, x1 := float64(padL), float64(plotW-padR)
		yb, yt := s.y(0), s.y(s.vmax)
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="13" font-weight="bold">%s — %s</text>`+"\n", padL, s.top+padT-10,
			html.EscapeString(p.column), html.EscapeString(p.metric))
		fmt.Fprintf(&b, `<path d="M%.1f %.1f V%.1f H%.1f" fill="none" stroke="black"/>`+"\n", x0, yt, yb, x1)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="end">0</text>`+"\n", x0-4, yb+4)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="end">%.3g</text>`+"\n", x0-4, yt+4, s.vmax)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f">%s</text>`+"\n", x0, yb+16, s.t0.UTC().Format("2006-01-02 15:04"))
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="end">%s</text>`+"\n", x1, yb+16, s.t1.UTC().Format("2006-01-02 15:04"))
		legend := s.top + padT
		if p.threshold != nil {
			y := s.y(*p.threshold)
			fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-dasharray="6 4"/>`+"\n", x0, y, x1, y, hex(thresholdColor))
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" fill="%s">threshold %.3g</text>`+"\n", x1+10, legend, hex(thresholdColor), *p.threshold)
			legend += 16
		}
		for j, se := range p.series {
			c := hex(palette[j%len(palette)])
			var pts []string
			for _, pt := range se.pts {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", s.x(pt.t), s.y(pt.v)))
				fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="2.5" fill="%s"><title>%s %s: %.4g</title></circle>`+"\n",
					s.x(pt.t), s.y(pt.v), c, html.EscapeString(se.name), pt.t.UTC().Format(time.RFC3339), pt.v)
			}
			fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", strings.Join(pts, " "), c)
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" fill="%s">%s</text>`+"\n", x1+10, legend, c, html.EscapeString(se.name))
			legend += 16
		}
	}
	b.WriteString("</svg>\n")
	return b.Bytes()
}

// plotPNG draws the same chart as a PNG. The standard library has no
// fonts, so the PNG has no text: the SVG is the one to read numbers from.
func plotPNG(panels []panel) ([]byte, error) {
	h := max(1, len(panels)) * panelH
	img := image.NewRGBA(image.Rect(0, 0, plotW, h))
	for i := range img.Pix {
		img.Pix[i] = 255
	}
	black := color.RGBA{0, 0, 0, 255}
	for i, p := range panels {
		s := newScale(p, i)
		x0, x1 := float64(padL), float64(plotW-padR)
		drawLine(img, x0, s.y(s.vmax), x0, s.y(0), black, 1, false)
		drawLine(img, x0, s.y(0), x1, s.y(0), black, 1, false)
		if p.threshold != nil {
			drawLine(img, x0, s.y(*p.threshold), x1, s.y(*p.threshold), thresholdColor, 1, true)
		}
		for j, se := range p.series {
			c := palette[j%len(palette)]
			for k, pt := range se.pts {
				x, y := s.x(pt.t), s.y(pt.v)
				dot(img, x, y, c)
				if k > 0 {
					drawLine(img, s.x(se.pts[k-1].t), s.y(se.pts[k-1].v), x, y, c, 2, false)
				}
			}
			// A legend swatch per series, in the right margin.
			ly := float64(s.top + padT + 16*j)
			drawLine(img, x1+10, ly, x1+40, ly, c, 3, false)
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// drawLine draws from (x0,y0) to (x1,y1), width px wide, dashed if asked.
func drawLine(img *image.RGBA, x0, y0, x1, y1 float64, c color.RGBA, width int, dashed bool) {
	n := int(math.Max(math.Abs(x1-x0), math.Abs(y1-y0))) + 1
	for i := 0; i <= n; i++ {
		if dashed && (i/6)%2 == 1 {
			continue
		}
		f := float64(i) / float64(n)
		x, y := int(math.Round(x0+(x1-x0)*f)), int(math.Round(y0+(y1-y0)*f))
		for d := 0; d < width; d++ {
			img.SetRGBA(x, y+d-width/2, c)
		}
	}
}

func dot(img *image.RGBA, x, y float64, c color.RGBA) {
	for dx := -2; dx <= 2; dx++ {
		for dy := -2; dy <= 2; dy++ {
			if dx*dx+dy*dy <= 5 {
				img.SetRGBA(int(math.Round(x))+dx, int(math.Round(y))+dy, c)
			}
		}
	}
}
