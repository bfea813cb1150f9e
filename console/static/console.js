// Live progress: every element with data-job="ID" inside a [data-live]
// container is updated from the server-sent events of /jobs/stream.
(function () {
  // Bars are drawn here: the Content-Security-Policy allows no inline style.
  document.querySelectorAll("[data-w]").forEach(function (el) { el.style.width = el.dataset.w + "%"; });
  var live = document.querySelector("[data-live]");
  if (!live || !live.dataset.live || !window.EventSource) return;
  var es = new EventSource("/jobs/stream?id=" + encodeURIComponent(live.dataset.live));
  es.addEventListener("progress", function (ev) {
    var p = JSON.parse(ev.data);
    document.querySelectorAll('[data-job="' + p.id + '"]').forEach(function (row) {
      row.querySelectorAll("[data-f]").forEach(function (el) {
        var f = el.dataset.f;
        if (f === "bar-r") el.style.width = p.pct_recalled + "%";
        else if (f === "bar-d") el.style.width = p.pct_dead + "%";
        else if (f === "status") el.textContent = p.status + (p.paused ? " (paused)" : "");
        else if (p[f] !== undefined) el.textContent = p[f];
      });
      if (p.finished) row.dataset.finished = "1";
    });
  });
  es.addEventListener("end", function () {
    es.close();
    if (live.dataset.reload) location.reload();
  });
})();
