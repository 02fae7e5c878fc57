/* The verify page: the code's delivery as it happens (queued, sending, retrying, sent, failed,
   or sent by a fallback channel), read from /ui/api/delivery once a second until it is final. */
(function () {
  "use strict";
  var G = window.Gatehouse;
  var box = document.getElementById("delivery");
  if (!box || box.getAttribute("data-status") === "none") return;
  var text = function (key) {
    return box.getAttribute("data-" + key) || "";
  };
  var channel = function (name) {
    return text("ch_" + name) || name;
  };
  var until = Date.now() + 10 * 60 * 1000;

  function show(d) {
    var fields = {
      channel: channel(d.channel),
      first: channel(d.first_channel),
      attempts: d.attempts,
    };
    var key = "d_" + d.status;
    if (d.status === "sent" && d.fallback) key = "d_fallback";
    box.setAttribute("data-status", d.status);
    box.textContent = G.fill(text(key) || text("d_unknown"), fields);
    box.hidden = false;
  }

  async function poll() {
    var answer = await G.api("/ui/api/delivery", null, "GET");
    if (answer.ok) {
      show(answer.body.data);
      if (answer.body.data.final) return;
    } else if (answer.status === 404) {
      box.hidden = true; // no sign-up from this browser (or its ticket expired)
      return;
    }
    if (Date.now() < until) window.setTimeout(poll, 1000);
  }

  poll();
})();
