/* The account page, live: a minimal Socket.IO client (Engine.IO 4 over a WebSocket, written
   here on the browser's own WebSocket) joined with an access token of this browser's session,
   renewed before it expires with the `token` event. It shows `security.notice` and
   `session.revoked` as they come; when this session ends elsewhere, the page signs itself out
   without a reload.

   Engine.IO packets: "0{...}" open, "2" ping (answered "3" pong), "1" close, "4..." a message.
   Socket.IO packets inside a message: "0" connect ("40{auth}" from us, "40{sid}" back),
   "1" disconnect, "2" event ("42[name, payload]"), "3" ack ("43<id>[answer]"), "4" refusal. */
(function () {
  "use strict";
  var G = window.Gatehouse;
  var live = document.getElementById("live");
  if (!live || !window.WebSocket) return;
  var own = live.getAttribute("data-session-id");
  var say = function (key) {
    return live.getAttribute("data-" + key) || "";
  };
  var socket = null;
  var ended = false;
  var retry = 1000;
  var renewal = null;
  var lastAck = 0;
  var acks = {};

  function status(key) {
    G.say("live-status", say(key));
  }

  function note(text) {
    var list = document.getElementById("notices");
    if (!list) return;
    var item = document.createElement("li");
    var time = document.createElement("time");
    var now = new Date();
    time.dateTime = now.toISOString();
    time.textContent = now.toLocaleTimeString(document.documentElement.lang);
    item.appendChild(time);
    item.appendChild(document.createTextNode(" " + text));
    list.insertBefore(item, list.firstChild);
  }

  function signedOut() {
    if (ended) return;
    ended = true;
    window.clearTimeout(renewal);
    if (socket) socket.close();
    var sections = document.getElementById("account-sections");
    if (sections) sections.hidden = true;
    var header = document.getElementById("signout-form");
    if (header) header.hidden = true;
    G.say("message", "");
    G.say("error", "");
    var box = document.getElementById("signed-out");
    if (box) box.hidden = false;
  }

  async function freshToken() {
    var answer = await G.api("/ui/api/token", {});
    if (answer.ok) return answer.body.data;
    if (answer.status === 401) signedOut();
    return null;
  }

  function send(packet) {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(packet);
  }

  function emit(event, payload, onAck) {
    var id = "";
    if (onAck) {
      id = String(++lastAck);
      acks[id] = onAck;
    }
    send("42" + id + JSON.stringify([event, payload]));
  }

  function renewIn(seconds) {
    window.clearTimeout(renewal);
    renewal = window.setTimeout(renew, Math.max(seconds - 60, 5) * 1000);
  }

  async function renew() {
    var fresh = await freshToken();
    if (!fresh || ended) return;
    emit("token", fresh.token, function (answer) {
      if (answer && answer.status === "success") renewIn(answer.data.expires_in);
      else if (socket) socket.close(); // connect again with a new token
    });
  }

  function onEvent(name, payload) {
    if (name === "session.revoked") {
      if (!payload || !payload.session_id || payload.session_id === own) {
        signedOut();
        return;
      }
      var row = document.getElementById("session-" + payload.session_id);
      if (row) row.remove();
      note(say("rv_other"));
    } else if (name === "security.notice") {
      note(say("nt_" + (payload && payload.type)) || say("nt_other"));
    }
  }

  function onMessage(text, token) {
    var kind = text.charAt(0);
    if (kind === "0") return send("40" + JSON.stringify({ token: token.token }));
    if (kind === "2") return send("3");
    if (kind !== "4") return;
    var type = text.charAt(1);
    var rest = text.slice(2);
    if (type === "0") {
      status("live_on");
      retry = 1000;
      renewIn(token.expires_in);
    } else if (type === "1" || type === "4") {
      if (socket) socket.close();
    } else if (type === "2") {
      var event = /^\d*(\[[\s\S]*\])$/.exec(rest);
      if (event) {
        var args = JSON.parse(event[1]);
        onEvent(args[0], args[1]);
      }
    } else if (type === "3") {
      var ack = /^(\d+)(\[[\s\S]*\])$/.exec(rest);
      if (ack && acks[ack[1]]) {
        var answer = acks[ack[1]];
        delete acks[ack[1]];
        answer(JSON.parse(ack[2])[0]);
      }
    }
  }

  function later() {
    if (ended) return;
    window.setTimeout(connect, retry);
    retry = Math.min(retry * 2, 30000);
  }

  async function dropped() {
    socket = null;
    window.clearTimeout(renewal);
    acks = {};
    if (ended) return;
    status("live_off");
    var answer = await G.api("/ui/api/session", null, "GET");
    if (answer.status === 401) signedOut();
    else later();
  }

  async function connect() {
    if (ended) return;
    status("live_connecting");
    var token = await freshToken();
    if (!token) return later();
    var scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    var url = scheme + "//" + window.location.host + "/socket.io/?EIO=4&transport=websocket";
    var opened = new WebSocket(url);
    socket = opened;
    opened.onmessage = function (message) {
      if (typeof message.data === "string") onMessage(message.data, token);
    };
    opened.onclose = function () {
      if (socket === opened) dropped();
    };
  }

  connect();
})();
