package main

import (
	"fmt"
	"html"
	"math"
	"strings"
)

// A bar chart: groups of horizontal bars, one bar per series, each group
// scaled to its own largest value (the groups are in different units),
// each bar labelled with its figure.

type bar struct {
	series string
	value  float64
	text   string
}

type group struct {
	label string
	bars  []bar
}

var palette = []string{"#2b6cb0", "#dd6b20", "#718096", "#38a169", "#805ad5"}

const (
	chartWidth = 760
	labelWidth = 230
	barHeight  = 16
	barGap     = 3
	groupGap   = 14
	textRoom   = 130 // right of the longest bar, for its label
)

func barChart(title string, groups []group) string {
	// Colours by series, in order of first appearance.
	colour := map[string]string{}
	var series []string
	for _, g := range groups {
		for _, b := range g.bars {
			if _, ok := colour[b.series]; !ok {
				colour[b.series] = palette[len(series)%len(palette)]
				series = append(series, b.series)
			}
		}
	}
	top := 56
	h := top
	for _, g := range groups {
		h += len(g.bars)*(barHeight+barGap) + groupGap
	}
	h += 10
	var s strings.Builder
	fmt.Fprintf(&s, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n",
		chartWidth, h, chartWidth, h)
	fmt.Fprintf(&s, `<rect width="100%%" height="100%%" fill="#ffffff"/>`+"\n")
	fmt.Fprintf(&s, `<text x="10" y="20" font-size="14" font-weight="bold">%s</text>`+"\n", html.EscapeString(title))
	// Legend.
	x := 10
	for _, name := range series {
		fmt.Fprintf(&s, `<rect x="%d" y="30" width="12" height="12" fill="%s"/>`, x, colour[name])
		fmt.Fprintf(&s, `<text x="%d" y="40">%s</text>`+"\n", x+16, html.EscapeString(name))
		x += 16 + 8*len(name) + 20
	}
	y := top
	maxLen := float64(chartWidth - labelWidth - textRoom)
	for _, g := range groups {
		var gmax float64
		for _, b := range g.bars {
			if !math.IsNaN(b.value) {
				gmax = math.Max(gmax, b.value)
			}
		}
		gh := len(g.bars) * (barHeight + barGap)
		fmt.Fprintf(&s, `<text x="10" y="%d">%s</text>`+"\n", y+gh/2+4, html.EscapeString(g.label))
		for _, b := range g.bars {
			w := 0.0
			if gmax > 0 && !math.IsNaN(b.value) && b.value > 0 {
				w = b.value / gmax * maxLen
			}
			fmt.Fprintf(&s, `<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"><title>%s: %s</title></rect>`,
				labelWidth, y, w, barHeight, colour[b.series], html.EscapeString(b.series), html.EscapeString(b.text))
			fmt.Fprintf(&s, `<text x="%.1f" y="%d">%s</text>`+"\n", float64(labelWidth)+w+4, y+barHeight-4, html.EscapeString(b.text))
			y += barHeight + barGap
		}
		y += groupGap
	}
	fmt.Fprintf(&s, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#999"/>`+"\n", labelWidth, top-4, labelWidth, y-groupGap)
	s.WriteString("</svg>\n")
	return s.String()
}
