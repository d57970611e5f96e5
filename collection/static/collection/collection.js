// Keyboard judging on the contractor pages. No framework; works on content htmx swaps in.
//   message box: Enter sends, Shift+Enter adds a new line; in a mixed campaign Tab reaches
//                the judgement-type radios (arrow keys pick), where Enter sends too
//   pairwise:    1–8 choose the scale point, = or 0 "about the same", Enter submits
//   ranking:     1..k append responses to the ranking, Backspace removes the last,
//                ArrowUp/ArrowDown move the focused item, Enter submits
// Every form marked data-once submits once: its buttons are disabled on submit.
(function () {
  "use strict";
  // The review page's boosted form swaps the next page in, scripts included: listen once.
  if (window.alignlabJudging) return;
  window.alignlabJudging = true;

  function typingIn(el) {
    if (!el || !el.tagName) return false;
    if (el.tagName === "TEXTAREA" || el.tagName === "SELECT" || el.isContentEditable) return true;
    var plain = ["radio", "checkbox", "hidden", "submit", "button", "reset"];
    return el.tagName === "INPUT" && plain.indexOf(el.type) < 0;
  }

  function say(form, text) {
    var status = form.querySelector(".judge-status");
    if (status) status.textContent = text;
  }

  // --- ranking -------------------------------------------------------------------------------

  function chips(widget) {
    return Array.prototype.slice.call(widget.querySelectorAll("[data-add]"));
  }

  function letterOf(widget, id) {
    var chip = widget.querySelector('[data-id="' + id + '"]');
    return chip ? chip.dataset.letter : "?";
  }

  function renderRanking(widget, focusId) {
    var order = widget._order, k = parseInt(widget.dataset.k, 10);
    var list = widget.querySelector(".rank-order");
    list.textContent = "";
    order.forEach(function (id, i) {
      var item = document.createElement("li");
      item.tabIndex = 0;
      item.dataset.id = id;
      item.textContent = "Response " + letterOf(widget, id)
        + (i === 0 ? " (" + widget.dataset.first + ")" : "") + " ";
      [["↑", -1, "Move up"], ["↓", 1, "Move down"], ["×", 0, "Remove"]].forEach(function (b) {
        var button = document.createElement("button");
        button.type = "button";
        button.className = "mini";
        button.textContent = b[0];
        button.title = b[2];
        button.setAttribute("aria-label", b[2] + " response " + letterOf(widget, id));
        button.dataset.move = b[1];
        item.appendChild(button);
      });
      list.appendChild(item);
    });
    chips(widget).forEach(function (chip) {
      chip.hidden = order.indexOf(chip.dataset.id) >= 0;
    });
    var complete = order.length === k;
    widget.querySelector(".rank-pool").hidden = complete;
    widget.querySelector("input[name=ranking]").value = complete ? order.join(",") : "";
    widget.classList.toggle("complete", complete);
    say(widget.form || widget.closest("form"),
      complete ? "Ranking complete: press Enter to submit."
        : (k - order.length) + " of " + k + " responses still to rank.");
    if (focusId) {
      var focused = list.querySelector('li[data-id="' + focusId + '"]');
      if (focused) focused.focus();
    }
  }

  function addToRanking(widget, number) {
    var chip = chips(widget)[number - 1];
    if (!chip || widget._order.indexOf(chip.dataset.id) >= 0) return false;
    widget._order.push(chip.dataset.id);
    renderRanking(widget, chip.dataset.id);
    return true;
  }

  function moveInRanking(widget, id, step) {
    var order = widget._order, i = order.indexOf(id), j = i + step;
    if (i < 0 || j < 0 || j >= order.length) return;
    order.splice(i, 1);
    order.splice(j, 0, id);
    renderRanking(widget, id);
  }

  function removeFromRanking(widget, id) {
    var i = widget._order.indexOf(id);
    if (i >= 0) widget._order.splice(i, 1);
    renderRanking(widget);
  }

  function setUpRanking(widget) {
    if (widget._order) return;
    // Changing a judgement starts from the ranking it holds (the hidden field's value).
    var held = widget.querySelector("input[name=ranking]").value;
    widget._order = held ? held.split(",").filter(function (id) {
      return !!widget.querySelector('[data-id="' + id + '"]');
    }) : [];
    // The selects are the fallback without JavaScript; the list below replaces them.
    var selects = widget.querySelector(".rank-selects");
    selects.hidden = true;
    selects.querySelectorAll("select").forEach(function (s) { s.disabled = true; });
    widget.querySelector(".rank-live").hidden = false;
    widget.addEventListener("click", function (event) {
      var chip = event.target.closest("[data-add]");
      if (chip) return addToRanking(widget, chips(widget).indexOf(chip) + 1);
      var button = event.target.closest("[data-move]");
      if (!button) return;
      var id = button.closest("li").dataset.id, step = parseInt(button.dataset.move, 10);
      if (step) moveInRanking(widget, id, step); else removeFromRanking(widget, id);
    });
    renderRanking(widget);
  }

  // --- forms ---------------------------------------------------------------------------------

  function complete(form) {
    var widget = form.querySelector("[data-ranking]");
    if (widget) return widget._order.length === parseInt(widget.dataset.k, 10);
    return !!form.querySelector("input[name=scale]:checked");
  }

  function setUp(root) {
    var scope = root && root.querySelectorAll ? root : document;
    var forms = Array.prototype.slice.call(scope.querySelectorAll("form[data-judge]"));
    if (scope.matches && scope.matches("form[data-judge]")) forms.push(scope);
    forms.forEach(function (form) {
      if (form.dataset.shownAt) return;
      form.dataset.shownAt = String(performance.now());
      var widget = form.querySelector("[data-ranking]");
      if (widget) setUpRanking(widget);
    });
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.hasAttribute("data-once")) return;
    if (form.dataset.submitting) {
      event.preventDefault();
      return;
    }
    if (form.dataset.shownAt && form.elements.time_spent_ms) {
      form.elements.time_spent_ms.value =
        Math.round(performance.now() - parseFloat(form.dataset.shownAt));
    }
    form.dataset.submitting = "1";
    // Disable after the browser has read the form, so a second click sends nothing.
    setTimeout(function () {
      form.querySelectorAll("button").forEach(function (b) { b.disabled = true; });
    }, 0);
  }, true); // capture: before htmx's own listener on a boosted form reads the time spent

  // A boosted form whose request failed (a refusal htmx does not swap in, or no answer):
  // say so beside the button and let the contractor send it again.
  function failed(event) {
    var form = event.detail && event.detail.elt;
    if (!form || !form.matches || !form.matches("form[data-once]")) return;
    var xhr = event.detail.xhr;
    say(form, xhr && xhr.status
      ? "The server refused this (" + xhr.status + "); reload the page and try again."
      : "No answer from the server; check your connection and submit again.");
    delete form.dataset.submitting;
    form.querySelectorAll("button").forEach(function (b) { b.disabled = false; });
  }
  document.addEventListener("htmx:responseError", failed);
  document.addEventListener("htmx:sendError", failed);

  document.addEventListener("keydown", function (event) {
    if (event.altKey || event.ctrlKey || event.metaKey || event.isComposing) return;
    var target = event.target;
    if (target.matches && target.matches("textarea[data-enter-submits]")) {
      if (event.key === "Enter" && !event.shiftKey) {
        event.preventDefault();
        if (target.value.trim() && !target.form.dataset.submitting) target.form.requestSubmit();
      }
      return;
    }
    if (target.matches && target.matches(".judge-kind input[type=radio]")) {
      if (event.key === "Enter") {
        event.preventDefault();
        var box = target.form.querySelector("textarea[data-enter-submits]");
        if (box && box.value.trim() && !target.form.dataset.submitting) target.form.requestSubmit();
        else if (box) box.focus();
      }
      return;
    }
    var form = document.querySelector("form[data-judge]");
    if (!form || typingIn(target) || form.dataset.submitting) return;
    var widget = form.querySelector("[data-ranking]");
    if (/^[0-9=]$/.test(event.key)) {
      var number = parseInt(event.key, 10);
      if (widget) {
        if (number && addToRanking(widget, number)) event.preventDefault();
      } else {
        var value = (event.key === "=" || event.key === "0") ? "tie" : String(number);
        var radio = form.querySelector('input[name=scale][value="' + value + '"]');
        if (radio) {
          radio.checked = true;
          event.preventDefault();
          var label = radio.closest("label").querySelector("span");
          say(form, "Chosen: " + label.textContent + ". Press Enter to submit.");
        }
      }
    } else if (event.key === "Backspace" && widget && widget._order.length) {
      event.preventDefault();
      removeFromRanking(widget, widget._order[widget._order.length - 1]);
    } else if ((event.key === "ArrowUp" || event.key === "ArrowDown") && widget
      && target.closest && target.closest(".rank-order li")) {
      event.preventDefault();
      moveInRanking(widget, target.closest("li").dataset.id, event.key === "ArrowUp" ? -1 : 1);
    } else if (event.key === "Enter" && !event.shiftKey) {
      if (target.tagName === "BUTTON" || target.tagName === "A" || target.tagName === "SUMMARY") {
        return; // Enter activates what has focus, as usual
      }
      event.preventDefault();
      if (complete(form)) form.requestSubmit();
      else say(form, widget ? "Rank every response first (number keys)."
        : "Choose a point 1–8 (or = for about the same) first.");
    }
  });

  if (window.htmx) window.htmx.onLoad(setUp); // content htmx swaps in later
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { setUp(document); });
  } else {
    setUp(document);
  }
})();
