//! One self-contained HTML page: headings, paragraphs, inline SVG figures (with a link to the
//! PNG next to the page) and tables. No scripts, styles inline, no network.

use std::fmt::Write as _;

pub enum Block {
    Paragraph(String),
    Figure {
        svg: String,
        caption: String,
        png: String,
    },
    Table {
        header: Vec<String>,
        rows: Vec<Vec<String>>,
    },
}

pub struct Section {
    pub title: String,
    pub blocks: Vec<Block>,
}

/// Escapes `&`, `<`, `>`, `"`.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Drops the XML declaration plotters puts before `<svg`, so the SVG can sit in HTML.
fn inline_svg(svg: &str) -> &str {
    svg.find("<svg").map_or(svg, |i| &svg[i..])
}

pub fn render(title: &str, intro: &str, sections: &[Section]) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n\
         <style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}}\
         h1{{font-size:1.6em}}h2{{margin-top:2em;border-bottom:1px solid #ccc}}\
         figure{{margin:1em 0}}figcaption{{color:#555;font-size:0.9em}}\
         table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #bbb;padding:4px 10px;text-align:right}}\
         th{{background:#f2f2f2}}</style>\n</head>\n<body>\n<h1>{}</h1>\n<p>{}</p>\n",
        escape(title),
        escape(title),
        escape(intro)
    );
    for s in sections {
        let _ = writeln!(h, "<h2>{}</h2>", escape(&s.title));
        for b in &s.blocks {
            match b {
                Block::Paragraph(t) => {
                    let _ = writeln!(h, "<p>{}</p>", escape(t));
                }
                Block::Figure { svg, caption, png } => {
                    let _ = writeln!(
                        h,
                        "<figure>\n{}\n<figcaption>{} (<a href=\"{}\">PNG</a>)</figcaption>\n</figure>",
                        inline_svg(svg),
                        escape(caption),
                        escape(png)
                    );
                }
                Block::Table { header, rows } => {
                    h.push_str("<table>\n<tr>");
                    for c in header {
                        let _ = write!(h, "<th>{}</th>", escape(c));
                    }
                    h.push_str("</tr>\n");
                    for r in rows {
                        h.push_str("<tr>");
                        for c in r {
                            let _ = write!(h, "<td>{}</td>", escape(c));
                        }
                        h.push_str("</tr>\n");
                    }
                    h.push_str("</table>\n");
                }
            }
        }
    }
    h.push_str("</body>\n</html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_escapes_text_and_inlines_svg() {
        let page = render(
            "run <a>",
            "x & y",
            &[Section {
                title: "LLC".into(),
                blocks: vec![
                    Block::Figure {
                        svg: "<?xml version=\"1.0\"?>\n<svg width=\"10\"></svg>".into(),
                        caption: "c".into(),
                        png: "llc.png".into(),
                    },
                    Block::Table {
                        header: vec!["a".into()],
                        rows: vec![vec!["<1>".into()]],
                    },
                ],
            }],
        );
        assert!(page.contains("<title>run &lt;a&gt;</title>") && page.contains("x &amp; y"));
        assert!(page.contains("<figure>\n<svg width=\"10\"></svg>") && !page.contains("<?xml"));
        assert!(page.contains("<td>&lt;1&gt;</td>") && page.contains("href=\"llc.png\""));
    }
}
