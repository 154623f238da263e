//! Tests of the colour maps, the layout, the drawing and the file helpers.

use crate::chart::{nice_ticks, Layout};
use crate::colormap::{correlation_color, pass_color, score_color, MISSING_COLOR};
use crate::correlation::correlation_layout;
use crate::heatmap::{head_heatmap_size, heatmap_layout, scale_max};
use crate::niah::niah_layout;
use crate::text::EmbeddedText;
use crate::*;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;

const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1A, b'\n'];

fn hex(c: RGBColor) -> String {
    format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2)
}

/// Width and height from a PNG's IHDR chunk, after checking the signature.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert!(bytes.len() > 24, "PNG of {} bytes is too short", bytes.len());
    assert_eq!(bytes[..8], PNG_SIGNATURE, "not a PNG signature");
    assert_eq!(&bytes[12..16], b"IHDR", "first chunk is not IHDR");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&bytes[16..20]), be(&bytes[20..24]))
}

/// A `rows` x `cols` grid of scores in 0..1 with a few holes.
fn sample_scores(rows: usize, cols: usize) -> Grid {
    let mut g = Grid::new(rows, cols);
    for r in 0..rows {
        for c in 0..cols {
            if (r * 7 + c * 3) % 11 != 0 {
                g.set(r, c, ((r * 31 + c * 17) % 23) as f64 / 22.0 * 0.8);
            }
        }
    }
    g
}

fn sample_niah() -> (Grid, Vec<usize>, Vec<f64>) {
    let lengths = vec![1000, 2000, 4000, 8000, 16000, 32000, 64000, 128000];
    let depths: Vec<f64> = (0..=10).map(|i| i as f64 * 10.0).collect();
    let mut g = Grid::new(depths.len(), lengths.len());
    for r in 0..depths.len() {
        for c in 0..lengths.len() {
            if c == lengths.len() - 1 && r % 3 == 0 {
                continue; // a missing cell
            }
            g.set(r, c, if c < 4 { 1.0 } else { 1.0 - ((r + c) % 5) as f64 / 4.0 });
        }
    }
    (g, lengths, depths)
}

/// Pixel (x, y) of an RGB buffer `w` pixels wide.
fn pixel(buf: &[u8], w: u32, (x, y): (i32, i32)) -> RGBColor {
    let i = (y as usize * w as usize + x as usize) * 3;
    RGBColor(buf[i], buf[i + 1], buf[i + 2])
}

// ---- colour maps -------------------------------------------------------------------------------

#[test]
fn score_color_endpoints_and_midpoint_are_viridis() {
    assert_eq!(hex(score_color(0.0, 1.0)), "#440154");
    assert_eq!(hex(score_color(0.5, 1.0)), "#21918C");
    assert_eq!(hex(score_color(1.0, 1.0)), "#FDE725");
    // Scale-free: only v/max matters.
    assert_eq!(score_color(0.2, 0.4), score_color(0.5, 1.0));
    // In between two stops it interpolates (strictly between the neighbours' green channels).
    let c = score_color(0.45, 1.0);
    assert!(c.1 > 0x78 && c.1 < 0x91, "{}", hex(c));
}

#[test]
fn score_color_clamps_nan_negative_and_over_max() {
    let low = score_color(0.0, 1.0);
    let high = score_color(1.0, 1.0);
    assert_eq!(score_color(f64::NAN, 1.0), low);
    assert_eq!(score_color(-3.0, 1.0), low);
    assert_eq!(score_color(f64::NEG_INFINITY, 1.0), low);
    assert_eq!(score_color(7.0, 1.0), high);
    assert_eq!(score_color(f64::INFINITY, 1.0), high);
    // A degenerate max: positive values go to the top, zero to the bottom, no panic.
    assert_eq!(score_color(0.3, 0.0), high);
    assert_eq!(score_color(0.3, f64::NAN), high);
    assert_eq!(score_color(0.0, 0.0), low);
}

#[test]
fn pass_color_endpoints_and_midpoint_are_the_niah_palette() {
    assert_eq!(hex(pass_color(0.0)), "#F0496E");
    assert_eq!(hex(pass_color(0.5)), "#EBB839");
    assert_eq!(hex(pass_color(1.0)), "#0CD79F");
    let quarter = pass_color(0.25);
    assert_eq!(quarter, RGBColor(0xEE, 0x81, 0x54)); // halfway between red and yellow, rounded
}

#[test]
fn pass_color_clamps_nan_negative_and_over_one() {
    assert_eq!(pass_color(f64::NAN), pass_color(0.0));
    assert_eq!(pass_color(-0.5), pass_color(0.0));
    assert_eq!(pass_color(1.5), pass_color(1.0));
    assert_eq!(pass_color(f64::INFINITY), pass_color(1.0));
}

/// Relative luminance (WCAG 2), which is what a reader without colour vision still sees.
fn luminance(c: RGBColor) -> f64 {
    let lin = |v: u8| {
        let v = f64::from(v) / 255.0;
        if v <= 0.04045 {
            v / 12.92
        } else {
            ((v + 0.055) / 1.055).powf(2.4)
        }
    };
    0.2126 * lin(c.0) + 0.7152 * lin(c.1) + 0.0722 * lin(c.2)
}

#[test]
fn the_colour_blind_palette_is_told_apart_by_lightness_alone() {
    use crate::{recall_color, RecallPalette};
    assert_eq!(recall_color(0.3, RecallPalette::Niah), pass_color(0.3));
    assert_eq!(hex(recall_color(0.0, RecallPalette::ColourBlind)), "#00224E");
    assert_eq!(hex(recall_color(1.0, RecallPalette::ColourBlind)), "#FEE838");
    // Lightness rises with recall, so failed and passed cells differ without hue ...
    let steps: Vec<f64> = (0..=20).map(|i| luminance(recall_color(f64::from(i) / 20.0, RecallPalette::ColourBlind))).collect();
    assert!(steps.windows(2).all(|w| w[1] > w[0]), "{steps:?}");
    let contrast = |a: f64, b: f64| (a.max(b) + 0.05) / (a.min(b) + 0.05);
    assert!(contrast(steps[0], steps[20]) > 10.0);
    // ... where the red and green ends of the usual palette are about as light as each other.
    assert!(contrast(luminance(pass_color(0.0)), luminance(pass_color(1.0))) < 2.5);
}

#[test]
fn missing_colour_differs_from_every_map_colour_at_the_ends() {
    for c in [score_color(0.0, 1.0), score_color(1.0, 1.0), pass_color(0.0), pass_color(0.5), pass_color(1.0)] {
        assert_ne!(c, MISSING_COLOR);
    }
}

// ---- grid and scale ----------------------------------------------------------------------------

#[test]
fn grid_get_set_round_trip_and_out_of_range_is_none() {
    let mut g = Grid::new(2, 3);
    assert_eq!(g.values.len(), 6);
    assert_eq!(g.get(1, 2), None);
    g.set(1, 2, 0.75);
    assert_eq!(g.get(1, 2), Some(0.75));
    assert_eq!(g.values[5], Some(0.75));
    assert_eq!(g.get(2, 0), None);
    assert_eq!(g.get(0, 3), None);
}

#[test]
fn scale_max_is_grid_max_but_at_least_a_tenth_and_ignores_nan() {
    let mut g = Grid::new(1, 3);
    assert_eq!(scale_max(&g), 0.1);
    g.set(0, 0, 0.0);
    g.set(0, 1, f64::NAN);
    assert_eq!(scale_max(&g), 0.1);
    g.set(0, 2, 0.62);
    assert_eq!(scale_max(&g), 0.62);
}

#[test]
fn nice_ticks_cover_zero_to_max() {
    let labels = |m: f64| nice_ticks(m).into_iter().map(|(_, s)| s).collect::<Vec<_>>();
    assert_eq!(labels(1.0), ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]);
    assert_eq!(labels(0.1), ["0.00", "0.02", "0.04", "0.06", "0.08", "0.10"]);
    assert_eq!(labels(0.87), ["0.0", "0.2", "0.4", "0.6", "0.8"]);
    assert_eq!(labels(1.2), ["0.00", "0.25", "0.50", "0.75", "1.00"]);
    assert_eq!(labels(f64::NAN), ["0"]);
}

#[test]
fn heatmap_size_grows_with_heads_from_640x480() {
    assert_eq!(head_heatmap_size(&Grid::new(2, 4)), (640, 480));
    assert_eq!(head_heatmap_size(&Grid::new(40, 40)), (800, 540));
    let (w32, _) = head_heatmap_size(&Grid::new(32, 32));
    let (w64, h64) = head_heatmap_size(&Grid::new(64, 64));
    assert!(w64 > w32 && w32 >= 640 && h64 > 480);
}

// ---- layout and pixels -------------------------------------------------------------------------

/// Draws a heatmap of `grid` into a fresh `w` x `h` RGB buffer and returns it with its layout.
fn render_heatmap(grid: &Grid, (w, h): (u32, u32)) -> (Vec<u8>, Layout) {
    let mut buf = vec![0u8; (w * h * 3) as usize];
    let layout;
    {
        let area = EmbeddedText::new(BitMapBackend::with_buffer(&mut buf, (w, h))).into_drawing_area();
        layout = heatmap_layout(&area, grid, "pixel test").unwrap();
        draw_head_heatmap(&area, grid, "pixel test").unwrap();
        area.present().unwrap();
    }
    (buf, layout)
}

#[test]
fn heatmap_max_cell_pixel_differs_from_zero_cell_pixel() {
    let mut g = Grid::new(2, 4);
    for r in 0..2 {
        for c in 0..4 {
            g.set(r, c, 0.0);
        }
    }
    g.set(1, 2, 0.9);
    let size = head_heatmap_size(&g);
    let (buf, layout) = render_heatmap(&g, size);
    let hot = pixel(&buf, size.0, layout.cell_center(1, 2));
    let cold = pixel(&buf, size.0, layout.cell_center(0, 0));
    assert_ne!(hot, cold);
    assert_eq!(hot, score_color(1.0, 1.0), "max cell should be the top of the scale");
    assert_eq!(cold, score_color(0.0, 1.0), "zero cell should be the bottom of the scale");
    // Layer 0 is the top row: its cells lie above layer 1's.
    assert!(layout.cell_rect(0, 0).y1 <= layout.cell_rect(1, 0).y0);
}

#[test]
fn a_difference_heatmap_is_blue_for_losses_white_for_none_red_for_gains() {
    let mut g = Grid::new(2, 3);
    for (c, v) in [(0, -0.6), (1, 0.0), (2, 0.3)] {
        g.set(0, c, v);
    }
    let size = head_heatmap_size(&g);
    let mut buf = vec![0u8; (size.0 * size.1 * 3) as usize];
    {
        let area = EmbeddedText::new(BitMapBackend::with_buffer(&mut buf, size)).into_drawing_area();
        crate::draw_head_difference(&area, &g, "score change", &crate::AxisNames::HEAD_CHANGE).unwrap();
        area.present().unwrap();
    }
    let mut scratch = vec![0u8; (size.0 * size.1 * 3) as usize];
    let area = BitMapBackend::with_buffer(&mut scratch, size).into_drawing_area();
    let l = heatmap_layout(&area, &g, "score change").unwrap();
    // The scale is symmetric about the largest change: -0.6 is full blue, 0 white, +0.3 half red.
    assert_eq!(pixel(&buf, size.0, l.cell_center(0, 0)), correlation_color(-1.0));
    assert_eq!(pixel(&buf, size.0, l.cell_center(0, 1)), correlation_color(0.0));
    assert_eq!(pixel(&buf, size.0, l.cell_center(0, 2)), correlation_color(0.5));
    assert_eq!(pixel(&buf, size.0, l.cell_center(1, 0)), MISSING_COLOR);
}

#[test]
fn heatmap_cells_tile_the_plot_and_large_grids_thin_their_labels() {
    let g = sample_scores(40, 40);
    let size = head_heatmap_size(&g);
    let mut buf = vec![0u8; (size.0 * size.1 * 3) as usize];
    let area = BitMapBackend::with_buffer(&mut buf, size).into_drawing_area();
    let l = heatmap_layout(&area, &g, "tiling").unwrap();
    assert_eq!(l.cell_rect(0, 0).x0, l.plot.x0);
    assert_eq!(l.cell_rect(0, 0).y0, l.plot.y0);
    assert_eq!(l.cell_rect(39, 39).x1, l.plot.x1);
    assert_eq!(l.cell_rect(39, 39).y1, l.plot.y1);
    for c in 0..39 {
        assert_eq!(l.cell_rect(0, c).x1, l.cell_rect(0, c + 1).x0);
    }
    assert!(l.row_step > 1, "40 layers in {}px should not label every row", l.plot.height());
    assert!(l.bar.x0 > l.plot.x1 && l.bar.x1 < size.0 as i32);
    // A 2x4 grid labels every layer and head.
    let small = heatmap_layout(&area, &Grid::new(2, 4), "t").unwrap();
    assert_eq!((small.row_step, small.col_step), (1, 1));
}

#[test]
fn long_titles_shrink_then_are_cut_and_never_pass_the_edges() {
    let g = sample_scores(6, 8);
    let size = head_heatmap_size(&g);
    let mut buf = vec![0u8; (size.0 * size.1 * 3) as usize];
    let area = EmbeddedText::new(BitMapBackend::with_buffer(&mut buf, size)).into_drawing_area();
    let style = |px: f64| TextStyle::from((FONT_FAMILY, px).into_font());
    let width = |l: &Layout| area.estimate_text_size(&l.title, &style(l.title_px)).unwrap().0 as i32;
    // A short title keeps its size and its words.
    let short = heatmap_layout(&area, &g, "retrieval scores").unwrap();
    assert_eq!((short.title.as_str(), short.title_px), ("retrieval scores", 24.0));
    // A longer one is drawn smaller, whole.
    let medium = "retrieval scores: lab model (bundled), run 2: 3 heads masked (top-3; uniform)";
    let l = heatmap_layout(&area, &g, medium).unwrap();
    assert!(
        l.title == medium && l.title_px < 24.0 && width(&l) <= size.0 as i32 - 20,
        "{} at {}: {} of {} px",
        l.title,
        l.title_px,
        width(&l),
        size.0
    );
    // One too long for the smallest size is cut with an ellipsis, inside the chart.
    let long = "retrieval scores: a model with a very long name indeed (bundled), run 12: 3 heads masked (random-3, seed 7; uniform)";
    let l = heatmap_layout(&area, &g, long).unwrap();
    assert!(l.title.ends_with('…') && long.starts_with(l.title.trim_end_matches('…')), "{}", l.title);
    assert!(width(&l) <= size.0 as i32 - 20, "{} px", width(&l));
}

#[test]
fn niah_missing_and_nan_cells_are_grey_and_full_recall_is_green() {
    let (mut g, lengths, depths) = sample_niah();
    g.set(2, 1, f64::NAN);
    let (w, h) = NIAH_SIZE;
    let mut buf = vec![0u8; (w * h * 3) as usize];
    let layout;
    {
        let area = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        layout = niah_layout(&area, &g, &lengths, &depths, "niah pixels", &crate::AxisNames::NIAH).unwrap();
        draw_niah_grid(&area, &g, &lengths, &depths, "niah pixels").unwrap();
        area.present().unwrap();
    }
    assert!(layout.swatch, "a grid with holes shows the no-data swatch");
    assert_eq!(pixel(&buf, w, layout.cell_center(0, 7)), MISSING_COLOR);
    assert_eq!(pixel(&buf, w, layout.cell_center(2, 1)), MISSING_COLOR);
    assert_eq!(pixel(&buf, w, layout.cell_center(0, 0)), pass_color(1.0));
    // Depth 0% is the top row.
    assert!(layout.cell_rect(0, 0).y0 < layout.cell_rect(10, 0).y0);
}

#[test]
fn embedded_text_draws_ink_inside_its_estimated_box() {
    let (w, h) = (240u32, 60u32);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    let (tw, th);
    {
        let area = EmbeddedText::new(BitMapBackend::with_buffer(&mut buf, (w, h))).into_drawing_area();
        let style = TextStyle::from((FONT_FAMILY, 20.0).into_font()).pos(Pos::new(HPos::Left, VPos::Top));
        (tw, th) = area.estimate_text_size("score 0.10", &style).unwrap();
        area.draw(&Text::new("score 0.10", (20, 10), style)).unwrap();
        area.present().unwrap();
    }
    assert!(tw > 60 && tw < 140 && th > 10 && th < 30, "estimate {tw}x{th}");
    let mut ink = Vec::new();
    for y in 0..h as i32 {
        for x in 0..w as i32 {
            if pixel(&buf, w, (x, y)) != WHITE {
                ink.push((x, y));
            }
        }
    }
    assert!(ink.len() > 50, "hardly any text pixels: {}", ink.len());
    let (min_x, max_x) = (ink.iter().map(|p| p.0).min().unwrap(), ink.iter().map(|p| p.0).max().unwrap());
    let (min_y, max_y) = (ink.iter().map(|p| p.1).min().unwrap(), ink.iter().map(|p| p.1).max().unwrap());
    assert!(min_x >= 19 && max_x <= 20 + tw as i32 + 1, "ink x {min_x}..{max_x} outside 20..{}", 20 + tw);
    assert!(min_y >= 9 && max_y <= 10 + th as i32 + 1, "ink y {min_y}..{max_y} outside 10..{}", 10 + th);
}

// ---- files -------------------------------------------------------------------------------------

fn check_png(path: &Path, expected: (u32, u32)) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(png_size(&bytes), expected, "{}", path.display());
}

fn check_svg(path: &Path, title: &str, expected: (u32, u32)) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.trim_start().starts_with("<svg"), "not an SVG: {}", &text[..text.len().min(80)]);
    assert!(text.contains(title), "SVG lacks the title {title:?}");
    assert!(text.contains(&format!("width=\"{}\"", expected.0)), "SVG width is not {}", expected.0);
    assert!(text.contains(FONT_FAMILY), "SVG text does not name the embedded font family");
}

#[test]
fn save_head_heatmap_png_and_svg_small_and_large() {
    let dir = tempfile::tempdir().unwrap();
    for (rows, cols) in [(2, 4), (40, 40)] {
        let g = sample_scores(rows, cols);
        let title = format!("Retrieval heads {rows}x{cols}");
        let png = dir.path().join(format!("heads-{rows}x{cols}.png"));
        let svg = dir.path().join(format!("heads-{rows}x{cols}.SVG"));
        save_head_heatmap(&png, &g, &title).unwrap();
        save_head_heatmap(&svg, &g, &title).unwrap();
        check_png(&png, head_heatmap_size(&g));
        check_svg(&svg, &title, head_heatmap_size(&g));
    }
    check_png(&dir.path().join("heads-2x4.png"), (640, 480));
    check_png(&dir.path().join("heads-40x40.png"), (800, 540));
}

#[test]
fn save_niah_grid_png_and_svg() {
    let dir = tempfile::tempdir().unwrap();
    let (g, lengths, depths) = sample_niah();
    let png = dir.path().join("niah.png");
    let svg = dir.path().join("niah.svg");
    save_niah_grid(&png, &g, &lengths, &depths, "NIAH sweep").unwrap();
    save_niah_grid(&svg, &g, &lengths, &depths, "NIAH sweep").unwrap();
    check_png(&png, (900, 500));
    check_svg(&svg, "NIAH sweep", (900, 500));
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("128000") && text.contains("100%"), "SVG lacks the axis labels");
}

#[test]
fn all_zero_and_all_nan_grids_still_draw() {
    let dir = tempfile::tempdir().unwrap();
    let mut zeros = Grid::new(3, 3);
    let mut nans = Grid::new(3, 3);
    for r in 0..3 {
        for c in 0..3 {
            zeros.set(r, c, 0.0);
            nans.set(r, c, f64::NAN);
        }
    }
    save_head_heatmap(&dir.path().join("zeros.png"), &zeros, "zeros").unwrap();
    save_head_heatmap(&dir.path().join("nans.png"), &nans, "nans").unwrap();
    save_niah_grid(&dir.path().join("nans-niah.png"), &nans, &[1, 2, 3], &[0.0, 50.0, 100.0], "").unwrap();
    check_png(&dir.path().join("nans.png"), (640, 480));
}

// ---- errors ------------------------------------------------------------------------------------

#[test]
fn empty_grid_is_a_shape_error() {
    let dir = tempfile::tempdir().unwrap();
    for g in [Grid::new(0, 4), Grid::new(3, 0), Grid::default()] {
        let path = dir.path().join("empty.png");
        let err = save_head_heatmap(&path, &g, "empty").unwrap_err();
        assert!(matches!(err, PlotError::Shape { .. }), "{err:?}");
        assert!(err.to_string().contains("empty"), "{err}");
        assert!(!path.exists(), "no file is left behind for a rejected grid");
        let mut buf = vec![0u8; 640 * 480 * 3];
        let area = BitMapBackend::with_buffer(&mut buf, (640, 480)).into_drawing_area();
        assert!(matches!(draw_head_heatmap(&area, &g, "x"), Err(PlotError::Shape { .. })));
        assert!(matches!(draw_niah_grid(&area, &g, &[], &[], "x"), Err(PlotError::Shape { .. })));
    }
}

#[test]
fn values_of_the_wrong_length_are_a_shape_error() {
    let g = Grid { rows: 2, cols: 2, values: vec![Some(1.0); 3], row_numbers: None };
    let dir = tempfile::tempdir().unwrap();
    let err = save_head_heatmap(&dir.path().join("bad.svg"), &g, "bad").unwrap_err();
    assert!(matches!(err, PlotError::Shape { rows: 2, cols: 2, .. }), "{err:?}");
    assert!(err.to_string().contains("3 cells"), "{err}");
}

#[test]
fn mismatched_niah_labels_are_a_shape_error() {
    let (g, lengths, depths) = sample_niah();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("niah.png");
    let err = save_niah_grid(&path, &g, &lengths[1..], &depths, "t").unwrap_err();
    assert!(matches!(err, PlotError::Shape { .. }), "{err:?}");
    assert!(err.to_string().contains("7 column labels given for 8 columns"), "{err}");
    let err = save_niah_grid(&path, &g, &lengths, &depths[..3], "t").unwrap_err();
    assert!(err.to_string().contains("3 row labels given for 11 rows"), "{err}");
    let mut buf = vec![0u8; 900 * 500 * 3];
    let area = BitMapBackend::with_buffer(&mut buf, NIAH_SIZE).into_drawing_area();
    assert!(matches!(draw_niah_grid(&area, &g, &lengths, &[], "t"), Err(PlotError::Shape { .. })));
}

#[test]
fn unknown_extension_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let g = sample_scores(2, 4);
    let err = save_head_heatmap(&dir.path().join("heads.bmp"), &g, "t").unwrap_err();
    match &err {
        PlotError::UnknownFormat { ext, .. } => assert_eq!(ext, "bmp"),
        other => panic!("expected UnknownFormat, got {other:?}"),
    }
    assert!(err.to_string().contains("\"bmp\""), "{err}");
    let (n, l, d) = sample_niah();
    let err = save_niah_grid(&dir.path().join("niah"), &n, &l, &d, "t").unwrap_err();
    assert!(matches!(err, PlotError::UnknownFormat { ref ext, .. } if ext.is_empty()), "{err:?}");
    assert!(!dir.path().join("heads.bmp").exists());
}

#[test]
fn unwritable_path_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let g = sample_scores(2, 4);
    for name in ["heads.png", "heads.svg"] {
        let path = dir.path().join("no-such-dir").join(name);
        let err = save_head_heatmap(&path, &g, "t").unwrap_err();
        assert!(matches!(err, PlotError::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("no-such-dir"), "{err}");
    }
}

#[test]
fn too_small_area_is_an_error_not_a_panic() {
    let mut buf = vec![0u8; 40 * 30 * 3];
    let area = BitMapBackend::with_buffer(&mut buf, (40, 30)).into_drawing_area();
    let err = draw_head_heatmap(&area, &sample_scores(2, 4), "tiny").unwrap_err();
    assert!(matches!(err, PlotError::Drawing(ref m) if m.contains("too small")), "{err:?}");
}

// ---- correlation matrix ------------------------------------------------------------------------

fn sample_models() -> (Vec<String>, Vec<Vec<f64>>) {
    let names = ["Mistral-7B-v0.2-hf", "Mixtral-8x7B-v0.1", "llama-2-7b-80k"].map(String::from).to_vec();
    let m = vec![vec![1.0, 0.9638, -0.0095], vec![0.9638, 1.0, -0.5], vec![-0.0095, -0.5, 1.0]];
    (names, m)
}

#[test]
fn correlation_color_is_blue_white_red() {
    assert_eq!(hex(correlation_color(-1.0)), "#2166AC");
    assert_eq!(hex(correlation_color(0.0)), "#F7F7F7");
    assert_eq!(hex(correlation_color(1.0)), "#B2182B");
    assert_eq!(correlation_color(f64::NAN), correlation_color(0.0));
    assert_eq!(correlation_color(-3.0), correlation_color(-1.0));
    assert_eq!(correlation_color(2.0), correlation_color(1.0));
    let warm = correlation_color(0.5);
    assert!(warm.0 > warm.2, "positive is red-ish: {}", hex(warm));
    let cool = correlation_color(-0.5);
    assert!(cool.2 > cool.0, "negative is blue-ish: {}", hex(cool));
}

#[test]
fn correlation_cells_are_coloured_and_every_name_is_labelled() {
    let (names, m) = sample_models();
    let size = correlation_matrix_size(&names);
    let mut buf = vec![0u8; (size.0 * size.1 * 3) as usize];
    let layout;
    {
        let area = EmbeddedText::new(BitMapBackend::with_buffer(&mut buf, size)).into_drawing_area();
        layout = correlation_layout(&area, &names, &m, "correlations").unwrap();
        draw_correlation_matrix(&area, &names, &m, "correlations").unwrap();
        area.present().unwrap();
    }
    assert_eq!((layout.rows, layout.cols), (3, 3));
    assert_eq!((layout.row_step, layout.col_step), (1, 1), "every model name is written on both axes");
    // Sample a corner of each cell: the centre holds the printed value.
    let corner = |r, c| {
        let rect = layout.cell_rect(r, c);
        pixel(&buf, size.0, (rect.x0 + 2, rect.y0 + 2))
    };
    assert_eq!(corner(0, 0), correlation_color(1.0));
    assert_eq!(corner(1, 2), correlation_color(-0.5));
    assert_eq!(corner(2, 1), correlation_color(-0.5));
    // The printed value leaves ink in the middle of the cell that differs from the cell colour.
    let rect = layout.cell_rect(0, 1);
    let inked = (rect.x0..rect.x1 - layout.gap)
        .flat_map(|x| (rect.y0..rect.y1 - layout.gap).map(move |y| (x, y)))
        .filter(|&p| pixel(&buf, size.0, p) != correlation_color(0.9638))
        .count();
    assert!(inked > 20, "no value printed in cell (0, 1): {inked} pixels");
}

#[test]
fn save_correlation_matrix_png_and_svg_with_names_and_values() {
    let dir = tempfile::tempdir().unwrap();
    let (names, m) = sample_models();
    let png = dir.path().join("corr.png");
    let svg = dir.path().join("corr.svg");
    save_correlation_matrix(&png, &names, &m, "Pearson r of mean scores").unwrap();
    save_correlation_matrix(&svg, &names, &m, "Pearson r of mean scores").unwrap();
    let size = correlation_matrix_size(&names);
    assert!(size.0 >= 480 && size.1 >= 400);
    check_png(&png, size);
    check_svg(&svg, "Pearson r of mean scores", size);
    let text = std::fs::read_to_string(&svg).unwrap();
    for want in ["Mistral-7B-v0.2-hf", "Mixtral-8x7B-v0.1", "llama-2-7b-80k", "0.96", "-0.50", "1.00", "-0.01"] {
        // plotters writes each text on a line of its own inside <text>.
        assert!(text.contains(&format!("\n{want}\n")), "SVG lacks the text {want}");
    }
    // Long names widen the image.
    let long = vec!["a-very-long-model-name-of-forty-characters".to_string(), "b".to_string()];
    assert!(correlation_matrix_size(&long).0 > correlation_matrix_size(&names[..2]).0);
}

#[test]
fn bad_correlation_matrices_are_shape_errors_and_leave_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let (names, m) = sample_models();
    let path = dir.path().join("corr.png");
    let err = save_correlation_matrix(&path, &names[..2], &m, "t").unwrap_err();
    assert!(matches!(err, PlotError::Shape { rows: 3, cols: 3, .. }), "{err:?}");
    assert!(err.to_string().contains("2 models"), "{err}");
    let ragged = vec![vec![1.0, 0.5], vec![0.5]];
    assert!(matches!(save_correlation_matrix(&path, &names[..2], &ragged, "t"), Err(PlotError::Shape { .. })));
    let err = save_correlation_matrix(&path, &[], &[], "t").unwrap_err();
    assert!(err.to_string().contains("empty"), "{err}");
    assert!(!path.exists());
    let mut buf = vec![0u8; 640 * 480 * 3];
    let area = BitMapBackend::with_buffer(&mut buf, (640, 480)).into_drawing_area();
    assert!(matches!(draw_correlation_matrix(&area, &names, &m[..2], "t"), Err(PlotError::Shape { .. })));
    // NaN cells draw grey, without a printed value.
    let mut nan = m.clone();
    nan[0][2] = f64::NAN;
    save_correlation_matrix(&dir.path().join("nan.svg"), &names, &nan, "t").unwrap();
}

#[test]
fn line_charts_save_as_png_and_svg_and_refuse_empty_series() {
    let dir = tempfile::tempdir().unwrap();
    let s = vec![
        Series { name: "stage 1".into(), points: (0..100).map(|i| (i as f64, 8.0 / (1.0 + i as f64 / 10.0))).collect() },
        Series { name: "stage 2".into(), points: (100..200).map(|i| (i as f64, f64::NAN.min(1.0) + 0.5)).collect() },
    ];
    let png = dir.path().join("loss.png");
    save_line_chart(&png, &s, "training loss", "step", "loss").unwrap();
    assert_eq!(png_size(&std::fs::read(&png).unwrap()), LINE_CHART_SIZE);
    let svg = dir.path().join("loss.svg");
    save_line_chart(&svg, &s, "training loss", "step", "loss").unwrap();
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("training loss") && text.contains("stage 2"));
    let empty = [Series { name: "x".into(), points: vec![(0.0, f64::NAN)] }];
    assert!(matches!(save_line_chart(&dir.path().join("e.png"), &empty, "t", "x", "y"), Err(PlotError::Shape { .. })));
}

// ---- bar, sorted-heads and banded line charts ---------------------------------------------------

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn bar_charts_save_side_by_side_and_stacked_with_values() {
    let dir = tempfile::tempdir().unwrap();
    let cats = names(&["0", "(0, 0.1]", "(0.1, 0.5]", "> 0.5"]);
    let share = Bars { name: "share of heads".into(), values: vec![0.52, 0.44, 0.03, 0.01] };
    let png = dir.path().join("bands.png");
    save_bar_chart(&png, &cats, std::slice::from_ref(&share), false, "score bands", "band", "share").unwrap();
    assert_eq!(png_size(&std::fs::read(&png).unwrap()), BAR_CHART_SIZE);
    let svg = dir.path().join("bands.svg");
    save_bar_chart(&svg, &cats, &[share], false, "score bands", "band", "share").unwrap();
    let text = std::fs::read_to_string(&svg).unwrap();
    for want in ["score bands", "(0.1, 0.5]", "0.52", "0.03"] {
        assert!(text.contains(want), "the SVG lacks {want:?}");
    }
    // Stacked: each stack's total is printed over it; with two sets a legend names them.
    let ks = names(&["0", "1"]);
    let stacks =
        [Bars { name: "hallucination".into(), values: vec![2.0, 5.0] }, Bars { name: "wrong extraction".into(), values: vec![1.0, 4.0] }];
    let svg = dir.path().join("stack.svg");
    save_bar_chart(&svg, &ks, &stacks, true, "failures", "K", "tests").unwrap();
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("\n3\n"), "the total 3 is printed");
    assert!(text.contains("\n9\n") && text.contains("wrong extraction"), "the total 9 and the legend");
    assert!(text.matches("<rect").count() >= 4);
}

#[test]
fn bad_bar_charts_are_shape_errors_and_leave_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.png");
    let two = Bars { name: "x".into(), values: vec![1.0, 2.0] };
    let e = save_bar_chart(&path, &names(&["a", "b", "c"]), std::slice::from_ref(&two), false, "t", "x", "y").unwrap_err();
    assert!(matches!(e, PlotError::Shape { .. }) && e.to_string().contains("2 values for 3 categories"), "{e}");
    assert!(matches!(save_bar_chart(&path, &[], std::slice::from_ref(&two), false, "t", "x", "y"), Err(PlotError::Shape { .. })));
    assert!(matches!(save_bar_chart(&path, &names(&["a", "b"]), &[], true, "t", "x", "y"), Err(PlotError::Shape { .. })));
    assert!(!path.exists());
    // Non-finite values draw no bar but are no error; all zeros still draw.
    let odd = Bars { name: "x".into(), values: vec![f64::NAN, 0.0] };
    save_bar_chart(&path, &names(&["a", "b"]), &[odd], false, "t", "x", "y").unwrap();
    assert!(png_size(&std::fs::read(&path).unwrap()) == BAR_CHART_SIZE);
}

#[test]
fn head_activity_names_the_strongest_heads_and_checks_lengths() {
    let dir = tempfile::tempdir().unwrap();
    let heads = names(&["5-0", "5-2", "1-4", "0-0"]);
    let svg = dir.path().join("activity.svg");
    save_head_activity(&svg, &heads, &[0.6, 0.59, 0.004, 0.0], &[1.0, 1.0, 0.1, 0.0], "heads by score").unwrap();
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("5-0") && text.contains("1-4") && text.contains("activation frequency"));
    assert!(!text.contains("0-0"), "a head that never scored is not named");
    let png = dir.path().join("activity.png");
    save_head_activity(&png, &heads, &[0.6, 0.59, 0.004, 0.0], &[1.0, 1.0, 0.1, 0.0], "heads").unwrap();
    assert_eq!(png_size(&std::fs::read(&png).unwrap()), BAR_CHART_SIZE);
    let e = save_head_activity(&dir.path().join("bad.png"), &heads, &[0.6], &[1.0; 4], "t").unwrap_err();
    assert!(e.to_string().contains("got 1 and 4"), "{e}");
    assert!(save_head_activity(&dir.path().join("none.png"), &[], &[], &[], "t").is_err());
}

#[test]
fn banded_line_charts_shade_the_band_and_check_their_input() {
    let dir = tempfile::tempdir().unwrap();
    let top = Series { name: "top-K".into(), points: vec![(0.0, 0.4), (1.0, 0.2), (2.0, 0.0)] };
    let random = Series { name: "random-K".into(), points: vec![(0.0, 0.4), (1.0, 0.38), (2.0, 0.37)] };
    let band = Band { series: 1, points: vec![(0.0, 0.4, 0.4), (1.0, 0.35, 0.4), (2.0, 0.33, 0.41)] };
    let svg = dir.path().join("k.svg");
    save_line_chart_with_bands(
        &svg,
        &[top.clone(), random.clone()],
        std::slice::from_ref(&band),
        Some((0.0, 1.0)),
        "pass rate",
        "K",
        "rate",
    )
    .unwrap();
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("<polygon") && text.contains("random-K") && text.contains("pass rate"));
    let png = dir.path().join("k.png");
    save_line_chart_with_bands(&png, std::slice::from_ref(&top), &[], None, "one", "K", "rate").unwrap();
    assert_eq!(png_size(&std::fs::read(&png).unwrap()), LINE_CHART_SIZE);
    // A lone point still draws.
    let lone = Series { name: "K = 0".into(), points: vec![(0.0, 0.5)] };
    save_line_chart_with_bands(&dir.path().join("lone.png"), &[lone], &[], Some((0.0, 1.0)), "t", "K", "rate").unwrap();
    let bad_band = Band { series: 2, ..band };
    let e = save_line_chart_with_bands(&dir.path().join("b.png"), &[top.clone(), random], &[bad_band], None, "t", "x", "y").unwrap_err();
    assert!(e.to_string().contains("series 2 but there are 2"), "{e}");
    let e = save_line_chart_with_bands(&dir.path().join("r.png"), &[top], &[], Some((1.0, 1.0)), "t", "x", "y").unwrap_err();
    assert!(e.to_string().contains("y range"), "{e}");
    assert!(!dir.path().join("b.png").exists() && !dir.path().join("r.png").exists());
}

#[test]
fn cell_maps_find_the_cell_under_every_pixel_and_ignore_the_margins() {
    let mut g = Grid::new(6, 8);
    g.set(4, 5, 0.7);
    let size = head_heatmap_size(&g);
    let (buf, layout) = render_heatmap(&g, size);
    let mut small = vec![0u8; (size.0 * size.1 * 3) as usize];
    let area = EmbeddedText::new(BitMapBackend::with_buffer(&mut small, size)).into_drawing_area();
    let cells = head_heatmap_cells(&area, &g, "pixel test", &crate::AxisNames::HEAD_SCORES).unwrap();
    assert_eq!((cells.rows, cells.cols), (6, 8));
    for r in 0..6 {
        for c in 0..8 {
            let rect = layout.cell_rect(r, c);
            assert_eq!(cells.cell_rect(r, c), (rect.x0, rect.y0, rect.x1, rect.y1));
            assert_eq!(cells.cell_at(rect.x0, rect.y0), Some((r, c)));
            assert_eq!(cells.cell_at(rect.x1 - 1, rect.y1 - 1), Some((r, c)));
        }
    }
    // The coloured cell is where the map says it is.
    let (x0, y0, x1, y1) = cells.cell_rect(4, 5);
    assert_eq!(pixel(&buf, size.0, ((x0 + x1 - 1) / 2, (y0 + y1 - 1) / 2)), score_color(0.7, 0.7));
    assert_eq!(cells.cell_at(0, 0), None, "the title corner is no cell");
    assert_eq!(cells.cell_at(cells.x1, cells.y0), None);
    let lengths = [256, 640, 1024];
    let depths = [0.0, 50.0, 100.0];
    let n = niah_grid_cells(&area, &Grid::new(3, 3), &lengths, &depths, "niah", &crate::AxisNames::NIAH).unwrap();
    assert_eq!((n.rows, n.cols), (3, 3));
    let (x0, y0, _, _) = n.cell_rect(2, 1);
    assert_eq!(n.cell_at(x0, y0), Some((2, 1)));
}

#[test]
fn a_hybrids_rows_are_labelled_with_its_attention_layers() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = Grid::new(4, 3).with_row_numbers(Some(vec![4, 12, 20, 28]));
    g.set(3, 1, 0.5);
    // Text is drawn as glyph outlines, so the labels are checked where the chart takes them from.
    assert_eq!(crate::heatmap::row_labels(&g), ["4", "12", "20", "28"]);
    assert_eq!(crate::heatmap::row_labels(&Grid::new(2, 3)), ["0", "1"]);
    let png = dir.path().join("hybrid.png");
    save_head_heatmap(&png, &g, "hybrid").unwrap();
    check_png(&png, (640, 480));
    // As many numbers as rows, or a shape error before any file is written.
    let bad = Grid::new(4, 3).with_row_numbers(Some(vec![4, 12]));
    let path = dir.path().join("bad.svg");
    let err = save_head_heatmap(&path, &bad, "bad").unwrap_err();
    assert!(matches!(err, PlotError::Shape { .. }), "{err:?}");
    assert!(!path.exists());
}
