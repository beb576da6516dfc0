// Flotilla status page: keeps <main id="live"> current without reloading the page.
// Follows /ui/events (server-sent events; `status` carries the hub's status version). When
// the version differs from the one shown, fetch this page's fragment and swap it in. One
// fetch at a time; changes during a fetch lead to one more fetch. No polling.
(function () {
  "use strict";
  var main = document.getElementById("live");
  var state = document.getElementById("live-state");
  if (!main || !window.EventSource || !window.fetch) {
    return;
  }
  var shown = main.getAttribute("data-version");
  var dirty = false;
  var busy = false;

  function say(text, cls) {
    if (state) {
      state.textContent = text;
      state.className = "live " + cls;
    }
  }

  function refresh() {
    if (busy || !dirty) {
      return;
    }
    busy = true;
    dirty = false;
    fetch(main.getAttribute("data-fragment"), { cache: "no-store", credentials: "same-origin" })
      .then(function (r) {
        if (r.status !== 200 && r.status !== 404) {
          throw new Error("HTTP " + r.status);
        }
        return r.text().then(function (html) {
          main.innerHTML = html; // rendered and escaped by the hub
          shown = r.headers.get("X-Flotilla-Version");
          main.setAttribute("data-version", shown);
          var n = Number(document.body.getAttribute("data-updates") || 0) + 1;
          document.body.setAttribute("data-updates", String(n));
          busy = false;
          say("live", "on");
          refresh();
        });
      })
      .catch(function () {
        // The next event (or reconnection) tries again.
        busy = false;
        dirty = true;
        say("update failed", "off");
      });
  }

  function follow() {
    var events = new EventSource("/ui/events");
    events.addEventListener("status", function (e) {
      if (e.data !== shown) {
        dirty = true;
        refresh();
      }
    });
    events.onopen = function () {
      say("live", "on");
    };
    events.onerror = function () {
      if (events.readyState === EventSource.CLOSED) {
        // Refused (too many pages, or the page turned off): try again later.
        say("not live", "off");
        setTimeout(follow, 10000);
      } else {
        say("reconnecting", "off");
      }
    };
  }
  follow();
})();
