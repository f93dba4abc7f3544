// The comparisons admin page: runs, rater checks and position bias from /api/admin/compare, rendered
// with textContent only (rater names and settings are text, never markup).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const el = glide.el;
  const num = (value) => el("td", value, { class: "num" });
  const share = (a, n) => (n ? `${a} of ${n}` : "none yet");

  function row(cells) {
    const tr = el("tr");
    for (const cell of cells) tr.append(cell instanceof Node ? cell : el("td", cell));
    return tr;
  }

  function biasText(b) {
    if (!b || !b.decisive) return "Position bias: no decisive votes yet.";
    return `Position bias: the left image won ${b.left_wins} of ${b.decisive} decisive votes ` +
      `(${(100 * b.left_share).toFixed(1)}%, two-sided binomial p = ${b.p_value.toPrecision(3)} against 50%); ` +
      `${b.ties} tied or both bad.`;
  }

  function render(data) {
    $("runs").tBodies[0].replaceChildren(...data.runs.map((r) => row([
      String(r.id), r.question, r.settings.join(", "), num(r.comparisons), num(r.checks),
      `${r.votes} of ${r.votes_wanted}`, num(r.cap === null ? "none" : r.cap)])));
    const blocks = data.questions.map((q) => {
      const block = el("section", null, { class: "panel" });
      block.append(el("h2", `Raters: ${q.question}`), el("p", biasText(q.position_bias)));
      const table = el("table", null, { class: "rater-checks" });
      table.append(row(["rater", "votes", "obvious pairs missed", "duplicates answered differently",
        "agreed with the majority", "p (Holm)", "flagged"].map((h) => el("th", h))));
      for (const c of q.raters) {
        const flagged = el("td", c.flagged.join(", "), c.flagged.length ? { class: "checks-flagged" } : {});
        table.append(row([c.rater, num(c.votes), share(c.obvious_missed, c.obvious), share(c.inconsistent, c.duplicates),
          share(c.majority_agreed, c.majority_votes), num(c.majority_p_holm === null ? "" : c.majority_p_holm.toPrecision(2)),
          flagged]));
      }
      block.append(table);
      return block;
    });
    $("questions").replaceChildren(...(blocks.length ? blocks : [el("p", "No comparison runs yet.")]));
  }

  async function start() {
    const me = await glide.signedInAdmin();
    if (!me) return;
    $("who").textContent = `${me.rater} (admin)`;
    $("admin").hidden = false;
    render(await glide.getJson("/api/admin/compare"));
    document.body.dataset.loaded = "1";
  }

  start();
})();
