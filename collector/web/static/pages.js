// VenueGuard pages (overview, venue, cases, readiness): live fragments and the print button.
// No library, no build step, nothing from outside the collector.
//
// Live: an element with data-live="<url>" opens that server-sent-event stream with fetch (so it
// can send X-VG-Poll: 1 — a live page does not keep its session awake) and, for each
// "fragment" event {id, html}, replaces the inner HTML of the element with that id. The stream
// ends after about a minute; the script reconnects. A 401 means the session ended: reload, which
// leads to the login form.
(function () {
  "use strict";

  document.addEventListener("click", function (ev) {
    var el = ev.target;
    if (el && el.hasAttribute && el.hasAttribute("data-print")) { window.print(); }
  });

  var status = document.querySelector("[data-live]");
  if (!status || !window.fetch || !window.TextDecoder) { return; }
  var url = status.getAttribute("data-live");

  function show(on) {
    status.textContent = status.getAttribute(on ? "data-on" : "data-off");
    status.className = "vg-live " + (on ? "on" : "off");
  }

  function handle(block) {
    var event = "message", data = "";
    block.split("\n").forEach(function (line) {
      if (line.indexOf("event:") === 0) { event = line.slice(6).trim(); }
      else if (line.indexOf("data:") === 0) { data += line.slice(5).trim(); }
    });
    if (event !== "fragment" || !data) { return; }
    var frag = JSON.parse(data);
    var el = document.getElementById(frag.id);
    if (el) { el.innerHTML = frag.html; }
  }

  function connect() {
    fetch(url, { headers: { "X-VG-Poll": "1", "Accept": "text/event-stream" }, credentials: "same-origin" })
      .then(function (resp) {
        if (resp.status === 401) { window.location.reload(); return null; }
        if (!resp.ok || !resp.body) { throw new Error("live " + resp.status); }
        show(true);
        var reader = resp.body.getReader(), decoder = new TextDecoder(), buffer = "";
        function pump() {
          return reader.read().then(function (r) {
            if (r.done) { return; }
            buffer += decoder.decode(r.value, { stream: true });
            var blocks = buffer.split("\n\n");
            buffer = blocks.pop();
            blocks.forEach(handle);
            return pump();
          });
        }
        return pump();
      })
      .then(function () { setTimeout(connect, 500); },
            function () { show(false); setTimeout(connect, 5000); });
  }
  connect();
})();
