//! The PNG: per-packet net cost by path and prefix count, hot single flow and first packet side
//! by side, one group of bars per path. Text is drawn with the `DejaVu` Sans font embedded in the binary
//! (plotters' `ab_glyph` backend), so no system font, fontconfig or freetype is involved.

use std::path::Path;

use anyhow::{Context as _, anyhow};
use plotters::{
    prelude::*,
    style::{
        FontStyle, register_font,
        text_anchor::{HPos, Pos, VPos},
    },
};

use super::results::{PacketRow, Report, SIZES, Value};

const LABEL_W: u32 = 500;
const ROW_H: u32 = 34;
const COLORS: [RGBColor; 3] = [
    RGBColor(66, 133, 244),
    RGBColor(244, 160, 0),
    RGBColor(200, 50, 50),
];

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing the chart: {e:?}")
}

pub fn draw(report: &Report, path: &Path) -> anyhow::Result<()> {
    // Registering twice (a second report in one process) is harmless but reports an error.
    let _ = register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular());
    let rows: Vec<&PacketRow> = report
        .per_packet
        .rows
        .iter()
        .filter(|r| r.hot.iter().any(|v| v.net().is_some()))
        .collect();
    let n = u32::try_from(rows.len()).context("row count")?;
    let (w, h) = (1900u32, 150 + n * ROW_H);
    let full = BitMapBackend::new(path, (w, h)).into_drawing_area();
    full.fill(&WHITE).map_err(err)?;
    let title = ("sans-serif", 22).into_font().color(&BLACK);
    full.draw_text(
        "Boundary per-packet cost: net ns over an empty program of the same type (BPF_PROG_TEST_RUN), by prefix count",
        &title,
        (20, 12),
    )
    .map_err(err)?;
    let small = ("sans-serif", 14).into_font().color(&BLACK);
    full.draw_text(&report.machine, &small, (20, 42))
        .map_err(err)?;
    for (k, (_, label)) in SIZES.iter().enumerate() {
        let x = i32::try_from(w).unwrap_or(0) - 420 + 130 * i32::try_from(k).unwrap_or(0);
        full.draw(&Rectangle::new([(x, 16), (x + 22, 32)], COLORS[k].filled()))
            .map_err(err)?;
        full.draw_text(&format!("{label} prefixes"), &small, (x + 28, 17))
            .map_err(err)?;
    }

    let body = full.margin(70, 10, 0, 10);
    let (_, panels) = body.split_horizontally(LABEL_W);
    let (left, right) = panels.split_horizontally((w - LABEL_W) / 2);
    let label_style = ("sans-serif", 14)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Right, VPos::Center));
    let value_style = ("sans-serif", 11)
        .into_font()
        .color(&RGBColor(60, 60, 60))
        .pos(Pos::new(HPos::Left, VPos::Center));
    let rows_f = f64::from(n);

    for (i, (area, hot)) in [(left, true), (right, false)].into_iter().enumerate() {
        let values = |r: &PacketRow| -> Vec<Option<f64>> {
            let v: &Vec<Value> = if hot { &r.hot } else { &r.random };
            v.iter().map(Value::net).collect()
        };
        let max = rows
            .iter()
            .flat_map(|r| values(r))
            .flatten()
            .fold(10.0f64, f64::max)
            * 1.12;
        let caption = if hot {
            "hot single flow (repeat >= 10^6)"
        } else {
            "first packet (fresh peer address, verdict cache emptied, per call)"
        };
        let mut chart = ChartBuilder::on(&area)
            .caption(caption, ("sans-serif", 18))
            .margin_right(20)
            .x_label_area_size(40)
            .build_cartesian_2d(0.0..max, 0.0..rows_f)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .light_line_style(RGBColor(238, 238, 238))
            .y_labels(0)
            .x_desc("net ns per packet")
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(err)?;
        for (idx, row) in rows.iter().enumerate() {
            #[expect(clippy::cast_precision_loss, reason = "a handful of rows")]
            let top = rows_f - idx as f64;
            for (k, v) in values(row).into_iter().enumerate() {
                let Some(net) = v else { continue };
                #[expect(clippy::cast_precision_loss, reason = "three bars")]
                let y1 = top - 0.08 - k as f64 * 0.28;
                let y0 = y1 - 0.26;
                let x = net.max(0.0);
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(0.0, y0), (x, y1)],
                        COLORS[k].filled(),
                    )))
                    .map_err(err)?;
                let at = chart.backend_coord(&(x, f64::midpoint(y0, y1)));
                full.draw_text(&format!("{net:.1}"), &value_style, (at.0 + 4, at.1))
                    .map_err(err)?;
            }
            if i == 0 {
                let at = chart.backend_coord(&(0.0, top - 0.5));
                let label = format!("{} {}", row.path, row.family);
                full.draw_text(&label, &label_style, (at.0 - 12, at.1))
                    .map_err(err)?;
            }
        }
    }
    full.present().map_err(err)?;
    Ok(())
}
