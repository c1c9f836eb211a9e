// VenueGuard pages: the little script every page loads (served by the collector, no CDN).
// - forms with data-confirm ask before submitting (disabling a user, deleting a device);
// - fetch() and htmx requests made by page scripts carry the session's CSRF token as
//   X-CSRF-Token (read from <meta name="csrf-token">), so they pass csrf_protect.
(function () {
  "use strict";
  var meta = document.querySelector('meta[name="csrf-token"]');
  var token = meta ? meta.getAttribute("content") : "";
  window.vgCsrfToken = token;

  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    var question = form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) { ev.preventDefault(); }
  });

  document.addEventListener("htmx:configRequest", function (ev) {
    if (token) { ev.detail.headers["X-CSRF-Token"] = token; }
  });

  var plainFetch = window.fetch;
  if (plainFetch) {
    window.fetch = function (input, init) {
      init = init || {};
      var method = (init.method || "GET").toUpperCase();
      if (token && method !== "GET" && method !== "HEAD") {
        var headers = new Headers(init.headers || {});
        if (!headers.has("X-CSRF-Token")) { headers.set("X-CSRF-Token", token); }
        init.headers = headers;
      }
      return plainFetch.call(window, input, init);
    };
  }
})();
